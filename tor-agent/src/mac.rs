//! MAC addresses as the agent compares them: six bytes, printed lowercase.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    pub fn is_broadcast(&self) -> bool {
        *self == Mac::BROADCAST
    }
}

impl FromStr for Mac {
    type Err = String;
    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-…`, any case.
    fn from_str(s: &str) -> Result<Mac, String> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split([':', '-']) {
            if n == 6 || part.len() != 2 {
                return Err(format!("{s} is not a MAC address"));
            }
            out[n] =
                u8::from_str_radix(part, 16).map_err(|_| format!("{s} is not a MAC address"))?;
            n += 1;
        }
        if n != 6 {
            return Err(format!("{s} is not a MAC address"));
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_lowercase() {
        let m: Mac = "02:AA:bb:00:00:0F".parse().unwrap();
        assert_eq!(m.to_string(), "02:aa:bb:00:00:0f");
        assert_eq!("02-aa-bb-00-00-0f".parse::<Mac>().unwrap(), m);
        assert!("02:aa:bb:00:00".parse::<Mac>().is_err());
        assert!("02:aa:bb:00:00:0f:11".parse::<Mac>().is_err());
        assert!("unknown-dst".parse::<Mac>().is_err());
        assert!("ff:ff:ff:ff:ff:ff".parse::<Mac>().unwrap().is_broadcast());
    }
}
