//! Turns a byte offset in the config text into a line number and a dotted key path,
//! so every error reads `gateway.toml:12: routes[1].upstream: ...`.

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The key path at a byte offset: the enclosing table header plus the key on that line
/// (or the nearest line above it that assigns one, for multi-line arrays).
pub(crate) fn key_at(text: &str, offset: usize) -> String {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let mut key = None;
    let mut table = String::new();
    for line in text[..line_end].lines().rev() {
        let t = line.trim();
        if let Some(header) = header_name(t) {
            table = table_path(text, header, t.starts_with("[["), line_end);
            break;
        }
        if key.is_none() {
            if let Some((k, _)) = t.split_once('=') {
                key = Some(k.trim().trim_matches('"').to_owned());
            }
        }
    }
    match (table.is_empty(), key) {
        (true, Some(k)) => k,
        (true, None) => String::new(),
        (false, Some(k)) => format!("{table}.{k}"),
        (false, None) => table,
    }
}

/// A table header's name, without brackets.
fn header_name(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some(inner[..end].trim_matches(|c| c == '[' || c == ' '))
}

/// `routes` becomes `routes[N]` for an array of tables (N counts headers before `end`).
fn table_path(text: &str, header: &str, is_array: bool, end: usize) -> String {
    if !is_array {
        return header.to_owned();
    }
    let index = text[..end]
        .lines()
        .filter(|l| header_name(l.trim()) == Some(header) && l.trim().starts_with("[["))
        .count()
        .saturating_sub(1);
    format!("{header}[{index}]")
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[listen]\nproxy = \"x\"\n\n[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\nendpoints = [\n  \"q\",\n]\n";

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of(TEXT, 0), 1);
        assert_eq!(line_of(TEXT, TEXT.find("proxy").unwrap()), 2);
    }

    #[test]
    fn keys_name_their_table_and_array_index() {
        assert_eq!(key_at(TEXT, TEXT.find("proxy").unwrap()), "listen.proxy");
        assert_eq!(key_at(TEXT, TEXT.find("\"a\"").unwrap()), "routes[0].name");
        assert_eq!(key_at(TEXT, TEXT.find("\"b\"").unwrap()), "routes[1].name");
        assert_eq!(
            key_at(TEXT, TEXT.find("\"q\"").unwrap()),
            "routes[1].endpoints"
        );
    }
}
