//! The Luhn check digit used by 保険者番号 and 医療機関コード (DOMAIN.md §2.1, §2.3).

/// Computes the check digit over `body` (ASCII digits): from the rightmost digit, multiply
/// alternately by 2, 1, 2, …; a two-digit product counts as the sum of its digits;
/// check = (10 − sum mod 10) mod 10. Returns `None` if `body` holds a non-digit.
pub fn check_digit(body: &[u8]) -> Option<u8> {
    let mut sum: u32 = 0;
    for (position, byte) in body.iter().rev().enumerate() {
        if !byte.is_ascii_digit() {
            return None;
        }
        let digit = u32::from(byte - b'0');
        let term = if position % 2 == 0 { digit * 2 } else { digit };
        sum += term / 10 + term % 10;
    }
    // The sum is reduced mod 10 first, so the value fits a u8.
    Some(((10 - sum % 10) % 10) as u8)
}

#[cfg(test)]
mod tests {
    use super::check_digit;

    #[test]
    fn domain_worked_examples() {
        assert_eq!(check_digit(b"0613048"), Some(8));
        assert_eq!(check_digit(b"3312001"), Some(5));
        assert_eq!(check_digit(b"5401602"), Some(7));
        assert_eq!(check_digit(b"13805"), Some(7));
        assert_eq!(
            check_digit(b"0013805"),
            Some(7),
            "zero padding never changes the check"
        );
        assert_eq!(check_digit(b"341071236"), Some(2));
        assert_eq!(check_digit(b"184014005"), Some(5));
        assert_eq!(check_digit(b"361801001"), Some(5));
    }

    #[test]
    fn rejects_non_digits() {
        assert_eq!(check_digit(b"12a4"), None);
    }
}
