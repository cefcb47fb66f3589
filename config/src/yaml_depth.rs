//! A cheap nesting-depth check for YAML text, run before the real parser.
//!
//! libyaml (under serde_yaml_ng) spends time quadratic in the depth of flow collections before
//! serde's recursion limit can refuse them: 100,000 nested `[` (200 KB) cost ~20 s of CPU.
//! This scan follows libyaml's tokenizer closely enough to know what is a quote, a comment, a
//! block scalar or a plain scalar (so brackets inside them do not count), counts flow levels
//! and block indentation levels, and stops at the limit after one linear pass.
//!
//! Where the scan cannot tell, it counts rather than skips: a wrong guess may only refuse a
//! document, never let a deep one through.

use std::fmt;

/// Deeper than any real document (Kubernetes objects and machine configs nest well under 40);
/// serde_yaml_ng refuses more than 128 levels anyway.
pub const MAX_DEPTH: usize = 128;

/// Where the text nests deeper than the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    pub limit: usize,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the document nests deeper than {} levels (line {}, column {})",
            self.limit, self.line, self.column
        )
    }
}

impl std::error::Error for TooDeep {}

/// Checks that `text` nests at most `limit` collections deep.
pub fn check(text: &[u8], limit: usize) -> Result<(), TooDeep> {
    Scanner::new(text, limit).run()
}

/// A key that may start a block mapping entry: where it started (libyaml's "simple key").
#[derive(Clone, Copy)]
struct Key {
    line: usize,
    index: usize,
    column: usize,
}

/// A block collection's indentation (libyaml's indent stack).
#[derive(Clone, Copy)]
struct Level {
    column: usize,
    /// Opened by `-` (a sequence) rather than by a key or `?` (a mapping).
    sequence: bool,
    /// A mapping holding a sequence at its own indentation (`key:\n- a`): one more level
    /// that libyaml does not push.
    indentless: bool,
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
    column: usize,
    limit: usize,
    flow: usize,
    /// Per flow level: (is a sequence, its current entry is a `key: value` pair). Such a
    /// pair is a one-entry mapping inside the sequence: one level more.
    flow_levels: Vec<(bool, bool)>,
    /// Block collections, innermost last.
    indents: Vec<Level>,
    key: Option<Key>,
    key_allowed: bool,
}

fn is_break(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_flow_indicator(b: u8) -> bool {
    matches!(b, b',' | b'[' | b']' | b'{' | b'}')
}

impl<'a> Scanner<'a> {
    fn new(s: &'a [u8], limit: usize) -> Self {
        Scanner {
            s,
            i: 0,
            line: 0,
            column: 0,
            limit,
            flow: 0,
            flow_levels: Vec::new(),
            indents: Vec::new(),
            key: None,
            key_allowed: true,
        }
    }

    fn at(&self, off: usize) -> Option<u8> {
        self.s.get(self.i + off).copied()
    }

    /// Blank, line break or the end, at `off`.
    fn blankz(&self, off: usize) -> bool {
        self.at(off).is_none_or(|b| is_blank(b) || is_break(b))
    }

    /// Moves past one byte, keeping the line and (character) column.
    fn advance(&mut self) {
        let Some(b) = self.at(0) else { return };
        self.i += 1;
        if b == b'\n' || (b == b'\r' && self.at(0) != Some(b'\n')) {
            self.line += 1;
            self.column = 0;
        } else if b & 0xC0 != 0x80 {
            self.column += 1;
        }
    }

    fn skip_to_break(&mut self) {
        while self.at(0).is_some_and(|b| !is_break(b)) {
            self.advance();
        }
    }

    /// Moves past one line break (`\n`, `\r\n` or `\r`), if there is one.
    fn skip_break(&mut self) {
        if self.at(0) == Some(b'\r') {
            self.advance();
        }
        if self.at(0) == Some(b'\n') {
            self.advance();
        }
    }

    fn indent(&self) -> isize {
        self.indents.last().map_or(-1, |l| l.column as isize)
    }

    fn check_depth(&self) -> Result<(), TooDeep> {
        let block: usize = self
            .indents
            .iter()
            .map(|l| 1 + usize::from(l.indentless))
            .sum();
        let pairs = self.flow_levels.iter().filter(|(_, pair)| *pair).count();
        if self.flow + pairs + block > self.limit {
            return Err(TooDeep {
                limit: self.limit,
                line: self.line + 1,
                column: self.column + 1,
            });
        }
        Ok(())
    }

    fn roll(&mut self, column: usize, sequence: bool) -> Result<(), TooDeep> {
        if self.flow > 0 {
            return Ok(());
        }
        if self.indent() < column as isize {
            self.indents.push(Level {
                column,
                sequence,
                indentless: false,
            });
            self.check_depth()?;
        } else if self.indent() == column as isize
            && let Some(top) = self.indents.last_mut()
        {
            if sequence && !top.sequence && !top.indentless {
                top.indentless = true;
                self.check_depth()?;
            } else if !sequence {
                // The mapping goes on: any sequence at its indentation has ended.
                top.indentless = false;
            }
        }
        Ok(())
    }

    /// A `?` or `:` inside a flow sequence makes its entry a one-pair mapping.
    fn flow_pair(&mut self) -> Result<(), TooDeep> {
        if let Some(top) = self.flow_levels.last_mut()
            && top.0
            && !top.1
        {
            top.1 = true;
            self.check_depth()?;
        }
        Ok(())
    }

    fn unroll(&mut self, column: isize) {
        if self.flow == 0 {
            while self.indent() > column {
                self.indents.pop();
            }
        }
    }

    fn save_key(&mut self) {
        if self.key_allowed && self.flow == 0 {
            self.key = Some(Key {
                line: self.line,
                index: self.i,
                column: self.column,
            });
        }
    }

    /// The saved key, unless it went stale (another line, or too far back), as in libyaml.
    fn live_key(&self) -> Option<Key> {
        self.key
            .filter(|k| k.line == self.line && k.index + 1024 >= self.i)
    }

    fn run(mut self) -> Result<(), TooDeep> {
        loop {
            self.skip_to_token();
            let Some(c) = self.at(0) else { return Ok(()) };
            self.unroll(self.column as isize);
            if self.column == 0 && c == b'%' {
                self.skip_to_break();
                continue;
            }
            if self.column == 0 && self.document_marker() {
                self.unroll(-1);
                self.key = None;
                self.key_allowed = false;
                for _ in 0..3 {
                    self.advance();
                }
                continue;
            }
            match c {
                b'[' | b'{' => {
                    self.save_key();
                    self.flow += 1;
                    self.flow_levels.push((c == b'[', false));
                    self.check_depth()?;
                    self.key_allowed = true;
                    self.advance();
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    self.flow_levels.pop();
                    self.key_allowed = false;
                    self.advance();
                }
                b',' => {
                    if let Some(top) = self.flow_levels.last_mut() {
                        top.1 = false;
                    }
                    self.key_allowed = true;
                    self.advance();
                }
                b'-' if self.blankz(1) => {
                    self.roll(self.column, true)?;
                    self.key = None;
                    self.key_allowed = true;
                    self.advance();
                }
                b'?' if self.flow > 0 || self.blankz(1) => {
                    self.roll(self.column, false)?;
                    self.flow_pair()?;
                    self.key = None;
                    self.key_allowed = self.flow == 0;
                    self.advance();
                }
                b':' if self.flow > 0 || self.blankz(1) => {
                    if self.flow == 0 {
                        let column = self.live_key().map_or(self.column, |k| k.column);
                        self.roll(column, false)?;
                    }
                    self.flow_pair()?;
                    self.key = None;
                    self.key_allowed = self.flow == 0;
                    self.advance();
                }
                b'*' | b'&' => {
                    self.save_key();
                    self.key_allowed = false;
                    self.advance();
                    while self
                        .at(0)
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    {
                        self.advance();
                    }
                }
                b'!' => {
                    self.save_key();
                    self.key_allowed = false;
                    // Ends at flow indicators too: counting a `[` libyaml took as part of a
                    // tag errs on the safe side.
                    while self
                        .at(0)
                        .is_some_and(|b| !is_blank(b) && !is_break(b) && !is_flow_indicator(b))
                    {
                        self.advance();
                    }
                }
                b'|' | b'>' if self.flow == 0 => {
                    self.key = None;
                    self.block_scalar();
                    self.key_allowed = true;
                }
                b'\'' | b'"' => {
                    self.save_key();
                    self.quoted(c);
                    self.key_allowed = false;
                }
                _ => {
                    self.save_key();
                    let start = self.i;
                    self.plain();
                    if self.i == start {
                        self.advance();
                    }
                }
            }
        }
    }

    /// `---` or `...` at the start of a line.
    fn document_marker(&self) -> bool {
        let three = |b| (0..3).all(|o| self.at(o) == Some(b));
        (three(b'-') || three(b'.')) && self.blankz(3)
    }

    /// Skips blanks, comments and line breaks up to the next token.
    fn skip_to_token(&mut self) {
        loop {
            if self.column == 0 && self.s[self.i..].starts_with(b"\xEF\xBB\xBF") {
                self.i += 3;
            }
            match self.at(0) {
                Some(b) if is_blank(b) => self.advance(),
                Some(b'#') => self.skip_to_break(),
                Some(b) if is_break(b) => {
                    self.advance();
                    if self.flow == 0 {
                        self.key_allowed = true;
                    }
                }
                _ => return,
            }
        }
    }

    /// A single- or double-quoted scalar, which may span lines.
    fn quoted(&mut self, quote: u8) {
        self.advance();
        while let Some(b) = self.at(0) {
            if quote == b'\'' && b == b'\'' {
                self.advance();
                if self.at(0) == Some(b'\'') {
                    self.advance();
                    continue;
                }
                return;
            }
            if quote == b'"' && b == b'\\' {
                self.advance();
                self.advance();
                continue;
            }
            self.advance();
            if quote == b'"' && b == b'"' {
                return;
            }
        }
    }

    /// A plain scalar: it ends at `: `, ` #`, flow indicators (in flow context), a document
    /// marker, or (in block context) a line indented no deeper than the enclosing block.
    fn plain(&mut self) {
        let min_column = (self.indent() + 1) as usize;
        let mut crossed_line = false;
        loop {
            if self.column == 0 && self.document_marker() {
                break;
            }
            if self.at(0) == Some(b'#') {
                break;
            }
            while let Some(b) = self.at(0) {
                if is_blank(b) || is_break(b) {
                    break;
                }
                if b == b':'
                    && (self.blankz(1)
                        || (self.flow > 0
                            && self
                                .at(1)
                                .is_some_and(|n| is_flow_indicator(n) || n == b'?')))
                {
                    break;
                }
                if self.flow > 0 && is_flow_indicator(b) {
                    break;
                }
                self.advance();
            }
            if !self.at(0).is_some_and(|b| is_blank(b) || is_break(b)) {
                break;
            }
            while let Some(b) = self.at(0) {
                if !is_blank(b) && !is_break(b) {
                    break;
                }
                crossed_line |= is_break(b);
                self.advance();
            }
            if self.flow == 0 && self.column < min_column {
                break;
            }
        }
        self.key_allowed = crossed_line;
    }

    /// A literal (`|`) or folded (`>`) block scalar: its header, then every line indented at
    /// least as far as its content (blank lines included).
    fn block_scalar(&mut self) {
        self.advance();
        let mut increment = 0usize;
        while let Some(b) = self.at(0) {
            match b {
                b'+' | b'-' => {}
                b'1'..=b'9' => increment = (b - b'0') as usize,
                _ => break,
            }
            self.advance();
        }
        // The rest of the header line (blanks and a comment; anything else is an error).
        self.skip_to_break();
        self.skip_break();
        let parent = self.indent();
        let indent = if increment > 0 {
            (parent.max(0) as usize) + increment
        } else {
            // Auto-detected: the first non-empty line's indentation, or that of any longer
            // empty line before it, and always deeper than the parent.
            let mut max = 0;
            let mut j = self.i;
            loop {
                let spaces = self.s[j..].iter().take_while(|&&b| b == b' ').count();
                max = max.max(spaces);
                j += spaces;
                match self.s.get(j) {
                    Some(&b) if is_break(b) => j += 1,
                    _ => break,
                }
            }
            max.max((parent + 1) as usize).max(1)
        };
        loop {
            let spaces = self.s[self.i..].iter().take_while(|&&b| b == b' ').count();
            let rest = self.s.get(self.i + spaces).copied();
            let content = spaces >= indent && rest.is_some();
            let empty = rest.is_some_and(is_break);
            if !(content || empty) {
                return;
            }
            self.skip_to_break();
            self.skip_break();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, limit: usize) -> bool {
        check(text.as_bytes(), limit).is_ok()
    }

    #[test]
    fn deep_flow_nesting_is_refused_quickly() {
        let text = "[".repeat(100_000);
        let err = check(text.as_bytes(), MAX_DEPTH).unwrap_err();
        assert_eq!((err.line, err.column), (1, 129));
        let text = format!("a: {}", "{x: ".repeat(200));
        assert!(!depth_ok(&text, MAX_DEPTH));
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let text = "- ".repeat(300) + "x";
        assert!(!depth_ok(&text, MAX_DEPTH));
        let mut text = String::new();
        for d in 0..200 {
            text += &format!("{}k{d}:\n", " ".repeat(d));
        }
        assert!(!depth_ok(&text, MAX_DEPTH));
    }

    #[test]
    fn brackets_in_scalars_comments_and_block_scalars_do_not_count() {
        let deep = "[".repeat(500);
        for text in [
            format!("a: '{deep}'"),
            format!("a: \"{deep}\\\"\""),
            format!("a: x{deep}"),
            format!("a: b # {deep}"),
            format!("# {deep}\na: 1"),
            format!("a: |\n  {deep}\n  more\n\n  {deep}\nb: 1"),
            format!("- >-\n    {deep}\n- x"),
            format!("a:\n  b: |2\n    {deep}\n  c: d"),
            format!("a: x\n  {deep}"),
        ] {
            assert!(depth_ok(&text, 10), "{text:.60}");
        }
    }

    #[test]
    fn quotes_and_closers_cannot_hide_nesting() {
        // Closing brackets inside quotes are not real closes.
        let text = "[ \"]\" ".repeat(300);
        assert!(!depth_ok(&text, MAX_DEPTH));
        // A quote in the middle of a plain scalar is not a quote.
        let text = format!("[a'b, {}", "[".repeat(300));
        assert!(!depth_ok(&text, MAX_DEPTH));
        // A plain scalar continued on the next line in flow context: its quote is literal.
        let text = format!("[a\n\"{}", "[".repeat(300));
        assert!(!depth_ok(&text, MAX_DEPTH));
        // A block scalar ends at the first line indented less than its content.
        let text = format!("a: |\n    x\n  b: {}", "[".repeat(300));
        assert!(!depth_ok(&text, MAX_DEPTH));
        // A block scalar's content must be deeper than the enclosing sequence.
        let text = format!("- - |\n  {}", "[".repeat(300));
        assert!(!depth_ok(&text, MAX_DEPTH));
        // Later documents count too.
        let text = format!("a: 1\n---\n{}", "[".repeat(300));
        assert!(!depth_ok(&text, MAX_DEPTH));
    }

    #[test]
    fn ordinary_documents_pass() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: {a: b, c: \"[d\"}\ndata:\n  f.json: |\n    {\"a\": [[[1]]]}\n  list: [1, [2, [3]]]\n";
        assert!(depth_ok(text, 10));
        let json = r#"{"a": {"b": [{"c": "]]]"}]}}"#;
        assert!(depth_ok(json, 10));
    }

    /// Generated documents: whenever serde_yaml_ng parses one, the scan's depth is at least
    /// the depth of the value it produced (the scan never undercounts what the parser nests).
    #[test]
    fn never_undercounts_what_the_parser_accepts() {
        fn depth(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
                serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
                _ => 0,
            }
        }
        fn scan_depth(text: &str) -> usize {
            (0..40).find(|&l| depth_ok(text, l)).unwrap_or(40)
        }
        let pieces = [
            "[", "]", "{", "}", ", ", ": ", "- ", "? ", "a", "'", "\"", "\\", "#", " ", "  ", "\n",
            "|", ">", "|2", "!t ", "&x ", "*x", "---\n", "b:", "\n  ", "\n    ", "- - ",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut parsed = 0;
        for _ in 0..60_000 {
            let len = 2 + (next() % 14) as usize;
            let text: String = (0..len)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            if let Ok(v) = serde_yaml_ng::from_str::<serde_json::Value>(&text) {
                parsed += 1;
                assert!(
                    scan_depth(&text) >= depth(&v),
                    "undercounted {text:?}: parser depth {}, scan {}",
                    depth(&v),
                    scan_depth(&text)
                );
            }
        }
        assert!(parsed > 1000, "only {parsed} generated documents parsed");
    }
}
