//! Parsing resource quantities ("500m", "1.5", "128Mi", "1e3") into integers: CPU in
//! millicores, everything else in units (bytes, pods).

/// A quantity scaled by 1000 (milli-units), rounded up; `None` when it does not parse.
pub fn milli(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (mant_num, mant_den) = decimal(num)?;
    // The multiplier as a fraction (numerator, denominator).
    let (mul, div): (i128, i128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "u" => (1, 1_000_000),
        "n" => (1, 1_000_000_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().ok()?;
            if exp >= 0 {
                (10i128.checked_pow(exp as u32)?, 1)
            } else {
                (1, 10i128.checked_pow((-exp) as u32)?)
            }
        }
        _ => return None,
    };
    let num = mant_num.checked_mul(mul)?.checked_mul(1000)?;
    let den = mant_den.checked_mul(div)?;
    // Round away from zero, as Kubernetes rounds quantities up.
    Some(if num >= 0 {
        (num + den - 1) / den
    } else {
        -((-num + den - 1) / den)
    })
}

/// A quantity in whole units, rounded up.
pub fn units(q: &str) -> Option<i128> {
    milli(q).map(|m| (m + 999).div_euclid(1000))
}

/// "12.50" -> (1250, 100).
fn decimal(s: &str) -> Option<(i128, i128)> {
    if s.is_empty() {
        return None;
    }
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{int}{frac}");
    if !digits.chars().all(|c| c.is_ascii_digit()) || frac.len() > 18 {
        return None;
    }
    let n: i128 = digits.parse().ok()?;
    let d = 10i128.pow(frac.len() as u32);
    Some((if neg { -n } else { n }, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_memory() {
        assert_eq!(milli("500m"), Some(500));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(milli("0.25"), Some(250));
        assert_eq!(milli("1e3"), Some(1_000_000));
        assert_eq!(units("128Mi"), Some(128 << 20));
        assert_eq!(units("1G"), Some(1_000_000_000));
        assert_eq!(units("1.5Ki"), Some(1536));
        assert_eq!(units("110"), Some(110));
        assert_eq!(milli("1x"), None);
        assert_eq!(milli(""), None);
        assert_eq!(milli("."), None);
    }
}
