//! What SQL text can cost, read from its tokens before any parser sees it.
//!
//! **Depth.**
//! Polars' SQL expressions and DataFusion's queries are parsed, planned, evaluated and dropped by
//! recursive code, one stack frame or more per level of the expression tree. sqlparser limits
//! nesting (parentheses, prefix operators) but not a chain of binary operators: `a + a + ... + a`
//! parses in a loop into a tree as deep as the chain is long, and 600 terms overflowed a 2 MiB
//! thread stack, which aborts the whole worker. A CASE with 10,000 branches, nested the same way,
//! took all the memory. [`check`] refuses such text from its tokens alone (no tree is built, so
//! nothing deep is made or dropped), and the worker's threads get stacks with room for the depth
//! it lets through ([`crate::memory::THREAD_STACK_BYTES`]).
//!
//! The bound is conservative. At each level of brackets, every binary operator of one
//! comma-separated element may add a level, and so may the deepest bracket group inside that
//! element: a path from the root passes through the operators at its level and into at most one
//! group. Joins and set operations nest plans, and count across the whole text. Long lists of
//! alternatives belong in `IN (...)`, whose elements are siblings.
//!
//! **Expansion.** A few functions make values far larger than their inputs (`lpad(s, 100000000)`,
//! `replace(s, 'a', <a long string>)`), and a long string literal is repeated on every row.
//! [`expands`] finds them, so that an operation using them is first tried on one row
//! ([`crate::ops::run`]) and refused if its result would pass `POLARWAY_MAX_RESULT_BYTES`:
//! Polars cannot stop a kernel midway, and one such call took all the machine's memory.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::Result;

/// Deepest expression or plan tree accepted, in operators.
pub const MAX_DEPTH: usize = 1_000;

/// Refuses `text` (parameter `what`) when it could parse into a tree deeper than [`MAX_DEPTH`].
pub fn check(what: &str, text: &str) -> Result<()> {
    let depth = bound(text);
    if depth > MAX_DEPTH {
        return Err(crate::limits::Limit::ExpressionDepth.exceeded(format!(
            "`{what}`: nests up to {depth} operators deep; the limit is {MAX_DEPTH}: write long lists of alternatives as IN (...)"
        )));
    }
    Ok(())
}

/// Functions whose result can be much larger than their arguments.
const EXPANDING: [&str; 8] = ["LPAD", "RPAD", "REPLACE", "REGEXP_REPLACE", "REPEAT", "CONCAT", "CONCAT_WS", "OVERLAY"];

/// String literals longer than this are repeated on every row they are used for.
const LONG_LITERAL: usize = 4 << 10;

/// Whether `text` calls a function that can make values much larger than its arguments, or holds
/// a long string literal.
pub fn expands(text: &str) -> bool {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, text).tokenize() else {
        return false;
    };
    let mut significant = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))).peekable();
    while let Some(token) = significant.next() {
        match token {
            Token::Word(w) if w.quote_style.is_none() => {
                let call = matches!(significant.peek(), Some(Token::LParen));
                if call && EXPANDING.iter().any(|f| w.value.eq_ignore_ascii_case(f)) {
                    return true;
                }
            }
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) | Token::EscapedStringLiteral(s)
                if s.len() > LONG_LITERAL =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

/// One bracket level: operators in the current element, the deepest group closed inside it, and
/// the deepest element finished before it.
#[derive(Default)]
struct Level {
    operators: usize,
    group: usize,
    finished: usize,
}

impl Level {
    fn depth(&self) -> usize {
        self.finished.max(self.operators + self.group)
    }

    fn next_element(&mut self) {
        self.finished = self.depth();
        self.operators = 0;
        self.group = 0;
    }
}

/// An upper bound on the depth of the tree `text` parses into. Text that does not tokenize is
/// left to the parser, which refuses it.
///
/// Longer than most functions here: it is one pass over the tokens, one arm per kind of token,
/// and most of its lines are the keyword lists, which read best where they are used.
pub fn bound(text: &str) -> usize {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, text).tokenize() else {
        return 0;
    };
    let mut levels = vec![Level::default()];
    let mut relational = 0;
    // Whether the last token ended an operand: an operator after anything else is a prefix one
    // (its nesting is sqlparser's to limit) and does not chain.
    let mut after_operand = false;
    for token in tokens {
        let top = levels.last_mut().expect("the outermost level stays");
        match token {
            Token::Whitespace(_) | Token::EOF => continue,
            Token::LParen | Token::LBrace => {
                levels.push(Level::default());
                after_operand = false;
            }
            Token::LBracket => {
                // A subscript chains like an operator: `a[1][1]...`.
                top.operators += usize::from(after_operand);
                levels.push(Level::default());
                after_operand = false;
            }
            Token::RParen | Token::RBrace | Token::RBracket => {
                close_level(&mut levels);
                after_operand = true;
            }
            Token::Comma | Token::SemiColon => {
                top.next_element();
                after_operand = false;
            }
            Token::Word(word) => match word.keyword {
                _ if word.quote_style.is_some() => after_operand = true,
                Keyword::JOIN | Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT | Keyword::SELECT => {
                    relational += 1;
                    top.next_element();
                    after_operand = false;
                }
                Keyword::FROM
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::WITH
                | Keyword::AS
                | Keyword::ON
                | Keyword::USING
                | Keyword::WINDOW
                | Keyword::QUALIFY
                | Keyword::OVER
                | Keyword::PARTITION => {
                    top.next_element();
                    after_operand = false;
                }
                Keyword::AND
                | Keyword::OR
                | Keyword::XOR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::IN
                | Keyword::BETWEEN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::RLIKE
                | Keyword::REGEXP
                | Keyword::MATCH
                | Keyword::WHEN
                | Keyword::THEN
                | Keyword::ELSE
                | Keyword::COLLATE
                | Keyword::DIV
                | Keyword::MOD
                | Keyword::AT
                | Keyword::OVERLAPS
                | Keyword::ESCAPE => {
                    top.operators += usize::from(after_operand);
                    after_operand = false;
                }
                _ => after_operand = true,
            },
            Token::Number(..)
            | Token::Char(_)
            | Token::Placeholder(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_) => after_operand = true,
            Token::Period => after_operand = false,
            // Every other token is an operator (arithmetic, comparison, casts, JSON access, ...).
            _ => {
                top.operators += usize::from(after_operand);
                after_operand = false;
            }
        }
    }
    // Unclosed brackets are the parser's to refuse; their depth still counts.
    while close_level(&mut levels) {}
    levels[0].depth().max(relational)
}

/// Closes the innermost bracket level into its parent; false at the outermost level, which stays
/// (a closing bracket without an opening one is the parser's to refuse).
fn close_level(levels: &mut Vec<Level>) -> bool {
    if levels.len() < 2 {
        return false;
    }
    let closed = levels.pop().expect("more than one level");
    let parent = levels.last_mut().expect("the outermost level stays");
    parent.group = parent.group.max(closed.depth() + 1);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanding_calls_and_long_literals_are_found() {
        assert!(expands("lpad(sym, 100000000, 'x')"));
        assert!(expands("upper(REPLACE (s, 'a', 'b'))"));
        assert!(expands(&format!("s = '{}'", "x".repeat(LONG_LITERAL + 1))));
        assert!(!expands("qty > 1 AND sym = 'lpad(x)'"), "inside a string");
        assert!(!expands("\"lpad\" + 1"), "a quoted column name");
        assert!(!expands("qty * price"));
        assert!(!expands(&format!("s = '{}'", "x".repeat(LONG_LITERAL))));
    }

    #[test]
    fn chains_count_their_operators() {
        assert_eq!(bound("qty"), 0);
        assert_eq!(bound("qty > 1"), 1);
        assert_eq!(bound("qty > 1 AND sym = 'A'"), 3);
        assert_eq!(bound(&format!("qty{}", " + qty".repeat(5_000))), 5_000);
        let branches: String = (0..600).map(|i| format!(" WHEN qty = {i} THEN {i}")).collect();
        assert!(bound(&format!("CASE{branches} ELSE 0 END")) >= 600);
        assert_eq!(bound(&format!("a{}", "[1]".repeat(2_000))), 2_000 + 1);
        assert_eq!(bound(&"(".repeat(3_000)), 3_000, "unclosed brackets still count");
    }

    #[test]
    fn siblings_do_not_add_up() {
        // Elements of a list, prefix signs and operators inside strings are not chains.
        let ids: Vec<String> = (0..20_000).map(|i| format!("-{i}")).collect();
        assert_eq!(bound(&format!("qty IN ({})", ids.join(", "))), 2);
        assert_eq!(bound(&format!("sym = '{}'", "+".repeat(10_000))), 1);
        let columns: Vec<String> = (0..5_000).map(|i| format!("qty + {i} AS c{i}")).collect();
        assert_eq!(bound(&format!("SELECT {} FROM t WHERE qty > 1", columns.join(", "))), 1);
        assert_eq!(bound("(a + b) * (c + (d - e))"), 5);
    }

    #[test]
    fn joins_and_set_operations_count_across_the_text() {
        let joins: String = (0..1_500).map(|i| format!(" JOIN t{i} ON t.k = t{i}.k")).collect();
        assert!(bound(&format!("SELECT * FROM t{joins}")) > MAX_DEPTH);
        let unions = vec!["SELECT 1"; 1_200].join(" UNION ALL ");
        assert!(bound(&unions) > MAX_DEPTH);
    }

    #[test]
    fn deep_text_is_refused_and_names_the_parameter() {
        let deep = format!("qty{}", " + qty".repeat(MAX_DEPTH + 1));
        let err = check("predicate", &deep).unwrap_err();
        assert!(
            matches!(err, crate::error::Error::LimitExceeded { limit: crate::limits::Limit::ExpressionDepth, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("`predicate`"), "{err}");
        check("predicate", &format!("qty{}", " + qty".repeat(MAX_DEPTH))).unwrap();
        check("predicate", "qty >").unwrap();
        check("predicate", "'unterminated").unwrap();
    }
}
