//! Natural order of frame file names: runs of digits compare as numbers, so `frame2.png` comes
//! before `frame10.png` (a plain string sort puts `frame10` first, and a video of frames named
//! without zero padding would play out of order).

use std::cmp::Ordering;

/// Compares two names in natural order: the names are cut into runs of ASCII digits and runs of
/// other characters; digit runs compare by value (leading zeros ignored), other runs as
/// strings. Names equal under that order (`a01` and `a1`) fall back to the plain string order,
/// so the order is total and a sort is deterministic.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a, b);
    loop {
        match (x.is_empty(), y.is_empty()) {
            (true, true) => return a.cmp(b),
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let (rx, tx) = split_run(x);
        let (ry, ty) = split_run(y);
        let both_digits = starts_digit(rx) && starts_digit(ry);
        let order = if both_digits {
            let (nx, ny) = (rx.trim_start_matches('0'), ry.trim_start_matches('0'));
            // Equal-length digit strings compare as numbers; a longer one is larger (no
            // overflow for any length).
            nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny))
        } else {
            rx.cmp(ry)
        };
        if order != Ordering::Equal {
            return order;
        }
        (x, y) = (tx, ty);
    }
}

fn starts_digit(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

/// The leading run of digits or of non-digits, and the rest.
fn split_run(s: &str) -> (&str, &str) {
    let digits = starts_digit(s);
    let end = s
        .char_indices()
        .find(|(_, c)| c.is_ascii_digit() != digits)
        .map_or(s.len(), |(i, _)| i);
    s.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_by_value() {
        let mut names = vec![
            "frame10.png",
            "frame2.png",
            "frame1.png",
            "frame002.png",
            "frame100.png",
            "a.png",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "a.png",
                "frame1.png",
                "frame002.png",
                "frame2.png",
                "frame10.png",
                "frame100.png"
            ]
        );
    }

    #[test]
    fn prefixes_and_long_numbers() {
        assert_eq!(natural_cmp("f", "f1"), Ordering::Less);
        assert_eq!(natural_cmp("x9", "x10"), Ordering::Less);
        // Longer than any integer type.
        assert_eq!(
            natural_cmp("f99999999999999999999999", "f100000000000000000000000"),
            Ordering::Less
        );
        assert_eq!(natural_cmp("b1", "a2"), Ordering::Greater);
        assert_eq!(natural_cmp("s1e2", "s1e10"), Ordering::Less);
    }
}
