//! What a DoGet ticket names, decoded in one place: a stored result (the ticket is its handle's
//! bytes, see [`crate::handle`]) or a Flight SQL metadata command (a protobuf `Any`).

use arrow_flight::sql::Command;

use crate::error::Result;
use crate::handle::Handle;

/// A decoded DoGet ticket.
#[derive(Debug)]
pub enum Ticket {
    /// A stored result.
    Result(Handle),
    /// A Flight SQL catalog command (`GetTables`, `GetSqlInfo`, ...), answered as one batch.
    SqlMetadata(Command),
}

impl Ticket {
    /// Decodes ticket bytes; what is neither a handle nor a Flight SQL command is refused as a
    /// malformed handle (INVALID_ARGUMENT).
    pub fn parse(bytes: &[u8]) -> Result<Ticket> {
        if !Handle::is_handle_ticket(bytes)
            && let Some(command) = super::sql::decode(bytes)
        {
            return Ok(Ticket::SqlMetadata(command));
        }
        Handle::from_ticket(bytes).map(Ticket::Result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::sql::{CommandGetTables, ProstMessageExt};
    use prost::Message;

    #[test]
    fn tickets_name_a_result_or_a_metadata_command() {
        let h = Handle::random();
        assert!(matches!(Ticket::parse(h.as_str().as_bytes()).unwrap(), Ticket::Result(got) if got == h));
        let tables = CommandGetTables::default().as_any().encode_to_vec();
        assert!(matches!(Ticket::parse(&tables).unwrap(), Ticket::SqlMetadata(Command::CommandGetTables(_))));
        assert!(Ticket::parse(b"pw1_nothex").is_err());
        assert!(Ticket::parse(b"\xff\x00").is_err());
    }
}
