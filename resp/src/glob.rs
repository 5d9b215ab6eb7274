//! Redis's glob patterns (`KEYS`, `SCAN MATCH`): `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, and `\`
//! quoting the next byte. Matched on bytes, without recursion on `*` (a pattern of many stars
//! stays linear per star, unlike a naive backtracking matcher).

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after the last `*`: the pattern just past it and the text it covers to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, t));
                    continue;
                }
                _ => {
                    if let Some(len) = one(&pattern[p..], text[t]) {
                        p += len;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        // Mismatch: let the last star cover one more byte, or fail.
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether the pattern element at the start of `pattern` (not `*`) matches byte `c`; returns
/// its length in the pattern when it does.
fn one(pattern: &[u8], c: u8) -> Option<usize> {
    match pattern[0] {
        b'?' => Some(1),
        b'\\' if pattern.len() >= 2 => (pattern[1] == c).then_some(2),
        b'[' => {
            let mut i = 1;
            let negate = pattern.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut hit = false;
            loop {
                match pattern.get(i) {
                    // An unterminated class ends at the pattern's end (Redis's behaviour).
                    None => break,
                    Some(b']') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < pattern.len() => {
                        hit |= pattern[i + 1] == c;
                        i += 2;
                    }
                    Some(&lo)
                        if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() && pattern[i + 2] != b']' =>
                    {
                        let hi = pattern[i + 2];
                        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                        hit |= (lo..=hi).contains(&c);
                        i += 3;
                    }
                    Some(&x) => {
                        hit |= x == c;
                        i += 1;
                    }
                }
            }
            (hit != negate).then_some(i)
        }
        other => (other == c).then_some(1),
    }
}

/// The literal bytes every match starts with (up to the first special character), so a scan
/// can start there instead of at the first key.
pub fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < pattern.len() => {
                out.push(pattern[i + 1]);
                i += 2;
            }
            b'\\' => break,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_redis() {
        let yes = |p: &str, t: &str| assert!(matches(p.as_bytes(), t.as_bytes()), "{p} should match {t}");
        let no = |p: &str, t: &str| assert!(!matches(p.as_bytes(), t.as_bytes()), "{p} should not match {t}");
        yes("*", "");
        yes("*", "anything");
        yes("h?llo", "hello");
        no("h?llo", "hllo");
        yes("h*llo", "heeeello");
        yes("h[ae]llo", "hallo");
        no("h[ae]llo", "hillo");
        yes("h[^e]llo", "hallo");
        no("h[^e]llo", "hello");
        yes("h[a-b]llo", "hbllo");
        yes("h[b-a]llo", "hallo");
        yes("user:*:name", "user:42:name");
        no("user:*:name", "user:42:names");
        yes("a\\*b", "a*b");
        no("a\\*b", "axb");
        yes("*a*b*c*", "xxaxxbxxcxx");
        no("*a*b*c*d", "xxaxxbxxcxx");
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "a*".repeat(40) + "b";
        let text = "a".repeat(200);
        let start = std::time::Instant::now();
        assert!(!matches(pattern.as_bytes(), text.as_bytes()));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn the_literal_prefix_stops_at_the_first_wildcard() {
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"a\\*b*"), b"a*b");
        assert_eq!(literal_prefix(b"*x"), b"");
    }
}
