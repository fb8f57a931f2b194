//! Ethernet MAC addresses as the switch keeps them: one `u64` each (the
//! forwarding database holds a million of them in the scale runs), written
//! the way vtep-ctl and ovs-vtep write `MAC` columns (lowercase, colons).

use std::fmt;
use std::str::FromStr;

/// A 48-bit MAC address in the low bits of a `u64`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address \"{input}\": {reason}")]
pub struct MacError {
    pub input: String,
    pub reason: &'static str,
}

impl Mac {
    pub const MAX: u64 = (1 << 48) - 1;
    pub const ZERO: Mac = Mac(0);

    /// The address from its 48-bit value; `None` beyond 48 bits.
    pub fn from_u64(v: u64) -> Option<Mac> {
        (v <= Mac::MAX).then_some(Mac(v))
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    pub fn octets(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// The group bit (bit 0 of the first octet): broadcast and multicast.
    pub fn is_multicast(self) -> bool {
        self.octets()[0] & 1 == 1
    }

    /// What a switch can learn as a source address: not group, not zero.
    pub fn is_learnable(self) -> bool {
        !self.is_multicast() && self.0 != 0
    }

    /// `self + n`, staying within 48 bits.
    pub fn checked_add(self, n: u64) -> Option<Mac> {
        self.0.checked_add(n).and_then(Mac::from_u64)
    }
}

impl FromStr for Mac {
    type Err = MacError;

    /// `aa:bb:cc:dd:ee:ff` in either case (also with `-`), as OVSDB peers
    /// write it; anything else is an error.
    fn from_str(s: &str) -> Result<Mac, MacError> {
        let err = |reason| MacError {
            input: s.chars().take(40).collect(),
            reason,
        };
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut v: u64 = 0;
        let mut n = 0;
        for part in s.split(sep) {
            if part.len() != 2 {
                return Err(err("expected six two-digit hex octets"));
            }
            let octet = u8::from_str_radix(part, 16).map_err(|_| err("not hexadecimal"))?;
            v = (v << 8) | u64::from(octet);
            n += 1;
            if n > 6 {
                return Err(err("more than six octets"));
            }
        }
        if n != 6 {
            return Err(err("expected six two-digit hex octets"));
        }
        Ok(Mac(v))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.octets();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_like_vtep_ctl() {
        let m: Mac = "02:AB:cd:00:01:ff".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:cd:00:01:ff");
        assert_eq!("02-ab-cd-00-01-ff".parse::<Mac>().unwrap(), m);
        assert_eq!(m.as_u64(), 0x02ab_cd00_01ff);
        assert!(m.is_learnable());
        assert!("01:00:5e:00:00:01".parse::<Mac>().unwrap().is_multicast());
        assert!(!"00:00:00:00:00:00".parse::<Mac>().unwrap().is_learnable());
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "",
            "unknown-dst",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "2:0:0:0:0:0",
            "0g:00:00:00:00:00",
            "02:00:00:00:00:0é",
            "02:00:00:00:00:000",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn arithmetic_stays_in_48_bits() {
        let top = Mac::from_u64(Mac::MAX).unwrap();
        assert_eq!(top.checked_add(1), None);
        assert_eq!(
            "02:00:00:00:00:ff"
                .parse::<Mac>()
                .unwrap()
                .checked_add(1)
                .unwrap()
                .to_string(),
            "02:00:00:00:01:00"
        );
        assert_eq!(Mac::from_u64(1 << 48), None);
    }
}
