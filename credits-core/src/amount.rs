//! [`Amount`]: a count of the smallest credit unit, with checked arithmetic only.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::LedgerError;

/// A non-negative number of the smallest credit unit (for example, a thousandth of a credit).
///
/// Arithmetic is checked: an overflow or an underflow is a [`LedgerError::AmountOverflow`] /
/// `None`, never a wrap-around. There is no float conversion on purpose.
///
/// ```
/// use credits_core::{Amount, LedgerError};
///
/// let a = Amount::new(40);
/// assert_eq!(a.checked_add(Amount::new(2))?, Amount::new(42));
/// assert_eq!(Amount::MAX.checked_add(Amount::new(1)), Err(LedgerError::AmountOverflow));
/// assert_eq!(a.checked_sub(Amount::new(41)), None);
/// # Ok::<(), LedgerError>(())
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Amount(u64);

impl Amount {
    /// Zero credits.
    pub const ZERO: Amount = Amount(0);
    /// The largest representable amount.
    pub const MAX: Amount = Amount(u64::MAX);

    /// `units` of the smallest credit unit.
    #[must_use]
    pub const fn new(units: u64) -> Self {
        Amount(units)
    }

    /// The number of smallest units.
    #[must_use]
    pub const fn units(self) -> u64 {
        self.0
    }

    /// Whether this is zero.
    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self + rhs`.
    ///
    /// # Errors
    /// [`LedgerError::AmountOverflow`] if the sum does not fit in a `u64`.
    pub fn checked_add(self, rhs: Amount) -> Result<Amount, LedgerError> {
        self.0
            .checked_add(rhs.0)
            .map(Amount)
            .ok_or(LedgerError::AmountOverflow)
    }

    /// `self - rhs`, or `None` if `rhs` is larger.
    #[must_use]
    pub fn checked_sub(self, rhs: Amount) -> Option<Amount> {
        self.0.checked_sub(rhs.0).map(Amount)
    }

    /// `self - rhs`, or zero if `rhs` is larger.
    #[must_use]
    pub const fn saturating_sub(self, rhs: Amount) -> Amount {
        Amount(self.0.saturating_sub(rhs.0))
    }

    /// The smaller of the two.
    #[must_use]
    pub fn min(self, other: Amount) -> Amount {
        Amount(self.0.min(other.0))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u32> for Amount {
    fn from(units: u32) -> Self {
        Amount(u64::from(units))
    }
}
