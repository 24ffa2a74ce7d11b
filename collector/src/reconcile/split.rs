//! Splitting an amount of money exactly: the parts always sum to the
//! whole, by the largest-remainder method.

/// `total` split in proportion to `weights` (not all zero), in whole
/// units: each part is its exact share rounded down, and the units left
/// over go one each to the largest remainders (ties to the earlier part).
pub fn by_weight(total: i128, weights: &[u128]) -> Vec<i128> {
    let sum: u128 = weights.iter().sum();
    let Ok(sum) = i128::try_from(sum) else {
        return Vec::new();
    };
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let shares: Vec<(i128, i128)> = weights
        .iter()
        .map(|&w| {
            let exact = total * i128::try_from(w).unwrap_or(i128::MAX);
            (exact.div_euclid(sum), exact.rem_euclid(sum))
        })
        .collect();
    with_leftover(total, shares)
}

/// Amounts in billionths rounded to cents (10,000,000 billionths), the
/// parts summing to the whole's own rounding (half away from zero): each
/// part rounded down, the cents left over to the largest remainders.
pub fn to_cents(nanos: &[i128]) -> Vec<i128> {
    const PER_CENT: i128 = 10_000_000;
    let total = round_half_away(nanos.iter().sum(), PER_CENT);
    let shares = nanos
        .iter()
        .map(|n| (n.div_euclid(PER_CENT), n.rem_euclid(PER_CENT)))
        .collect();
    with_leftover(total, shares)
}

/// `value / unit`, half away from zero.
pub fn round_half_away(value: i128, unit: i128) -> i128 {
    let (quotient, remainder) = (value / unit, value % unit);
    if remainder.abs() * 2 >= unit {
        quotient + value.signum()
    } else {
        quotient
    }
}

/// Parts rounded down with their remainders, and the whole they must sum
/// to: the difference (fewer than the parts) goes to the largest
/// remainders.
fn with_leftover(total: i128, shares: Vec<(i128, i128)>) -> Vec<i128> {
    let mut parts: Vec<i128> = shares.iter().map(|(floor, _)| *floor).collect();
    let leftover = total - parts.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| shares[b].1.cmp(&shares[a].1).then(a.cmp(&b)));
    for &i in order.iter().take(usize::try_from(leftover).unwrap_or(0)) {
        parts[i] += 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_sum_to_the_whole_and_follow_the_weights() {
        assert_eq!(by_weight(100, &[1, 1, 1]), [34, 33, 33]);
        assert_eq!(by_weight(-100, &[1, 1, 1]), [-33, -33, -34]);
        assert_eq!(by_weight(7, &[0, 5, 0]), [0, 7, 0]);
        assert_eq!(by_weight(10, &[3, 7]), [3, 7]);
        assert_eq!(by_weight(0, &[3, 7]), [0, 0]);
        assert_eq!(by_weight(5, &[0, 0]), [0, 0]);
        for total in [-1_000_003i128, -7, 1, 999, 123_456_789_012] {
            let weights = [17u128, 1, 1 << 40, 3, 0];
            assert_eq!(by_weight(total, &weights).iter().sum::<i128>(), total);
        }
    }

    #[test]
    fn cents_sum_to_the_rounded_whole() {
        // 0.333... three times: 100 cents in all, one part takes the cent.
        assert_eq!(
            to_cents(&[333_333_333, 333_333_333, 333_333_334]),
            [33, 33, 34]
        );
        // 1.5 cents rounds to 2; each half cent stays a remainder.
        assert_eq!(to_cents(&[5_000_000, 10_000_000]), [1, 1]);
        assert_eq!(to_cents(&[-15_000_000]), [-2]);
        assert_eq!(to_cents(&[25_000_000, -4_000_000]), [2, 0]);
        assert_eq!(round_half_away(-5, 10), -1);
        assert_eq!(round_half_away(4, 10), 0);
    }
}
