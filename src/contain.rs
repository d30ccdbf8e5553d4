//! Containing panics: the one place a panic is caught ([`catch`]), and the guard for third-party
//! decoders that panic on input from outside.
//!
//! arrow-rs's IPC reader asserts on array lengths, null counts and offsets, and Polars' import of
//! Arrow types unwraps field metadata and panics on types it lacks. Both see bytes a client sent
//! or a store returned. [`crate::store::ipc`] refuses the malformed structures it can recognise; the
//! decoding itself runs inside [`guard`] (or [`Guarded`] for a stream), where a panic becomes an
//! error for that request alone, the way Polars panics in operations are contained by the
//! engine's blocking pool.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

use crate::error::Error;

thread_local! {
    static GUARDS: Cell<u32> = const { Cell::new(0) };
}

/// Whether this thread is inside [`guard`]: a panic here is contained. Panic hooks that treat
/// every other panic as fatal (the fuzz targets) ask this.
pub fn guarded() -> bool {
    GUARDS.with(|g| g.get() > 0)
}

/// Runs `f`; a panic comes back as its message. [`crate::engine::exec`] runs every operation through
/// this, and [`guard`] every decoder.
pub fn catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(payload.as_ref()).to_string())
}

/// Awaits `work`; a panic while polling it comes back as its message.
pub async fn catch_async<T>(work: impl Future<Output = T>) -> std::result::Result<T, String> {
    use futures::FutureExt;
    AssertUnwindSafe(work).catch_unwind().await.map_err(|payload| panic_message(payload.as_ref()).to_string())
}

/// Runs `f` counted as guarded; a panic comes back as its message, logged once here.
fn contained<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    GUARDS.with(|g| g.set(g.get() + 1));
    let outcome = catch(f);
    GUARDS.with(|g| g.set(g.get() - 1));
    outcome.inspect_err(|message| tracing::warn!(panic = %message, "decoder panicked on its input"))
}

/// The message a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}

/// Runs `f`, which decodes bytes from outside; a panic inside becomes `on_panic(message)`.
pub fn guard<T>(
    on_panic: impl FnOnce(String) -> Error,
    f: impl FnOnce() -> crate::error::Result<T>,
) -> crate::error::Result<T> {
    contained(f).unwrap_or_else(|message| Err(on_panic(message)))
}

/// A stream whose every poll runs inside [`guard`]: a panic ends it with an error item.
pub struct Guarded<S, E> {
    inner: Option<S>,
    on_panic: fn(String) -> E,
}

impl<S, E> Guarded<S, E> {
    /// Guards `inner`; a panic while polling it yields `on_panic(message)` and ends the stream.
    pub fn new(inner: S, on_panic: fn(String) -> E) -> Self {
        Guarded { inner: Some(inner), on_panic }
    }
}

impl<T, E, S: Stream<Item = std::result::Result<T, E>> + Unpin> Stream for Guarded<S, E> {
    type Item = std::result::Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        match contained(|| Pin::new(inner).poll_next(cx)) {
            Ok(poll) => poll,
            Err(message) => {
                self.inner = None;
                Poll::Ready(Some(Err((self.on_panic)(message))))
            }
        }
    }
}
