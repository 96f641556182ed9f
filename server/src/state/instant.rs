//! Reading the instants of runs' rows.
//!
//! chrono writes a `DateTime<Utc>` as RFC 3339 in UTC, `Z` and 0, 3, 6 or 9
//! digits of fraction (`2026-11-30T02:20:00.123456789Z`). Its reader accepts
//! any offset and a relaxed syntax, and was the largest single cost of
//! decoding a run's row: a run has two to eight instants, and a start
//! decodes every run. The form chrono writes is read here directly;
//! anything else (another offset, a leap second) by chrono, so what reads
//! is exactly what chrono reads.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::Deserializer;
use serde::de::{Error, Visitor};

/// Reads an instant, for `#[serde(deserialize_with)]`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(InstantVisitor)
}

/// Reads an optional instant, for `#[serde(deserialize_with)]`.
pub mod option {
    use super::*;

    /// Reads `null` or an instant.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("null or an RFC 3339 instant")
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            super::deserialize(deserializer).map(Some)
        }
    }
}

struct InstantVisitor;

impl Visitor<'_> for InstantVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 instant")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
        match parse_utc(text) {
            Some(at) => Ok(at),
            None => text
                .parse::<DateTime<FixedOffset>>()
                .map(|at| at.with_timezone(&Utc))
                .map_err(E::custom),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.F]Z`, with 1 to 9 digits of fraction `F`; `None`
/// for anything else, or a date or time that does not exist.
fn parse_utc(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    let (stamp, fraction) = bytes.strip_suffix(b"Z")?.split_at_checked(19)?;
    if [stamp[4], stamp[7], stamp[10], stamp[13], stamp[16]] != *b"--T::" {
        return None;
    }
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |value, &digit| {
            digit.is_ascii_digit().then(|| value * 10 + u32::from(digit - b'0'))
        })
    };
    let nanos = match fraction {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => number(digits)? * 10u32.pow(9 - digits.len() as u32),
        _ => return None,
    };
    let year = i32::try_from(number(&stamp[0..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, number(&stamp[5..7])?, number(&stamp[8..10])?)?
        .and_hms_nano_opt(
            number(&stamp[11..13])?,
            number(&stamp[14..16])?,
            number(&stamp[17..19])?,
            nanos,
        )
        .map(|at| at.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono_reads(text: &str) -> Option<DateTime<Utc>> {
        text.parse::<DateTime<FixedOffset>>()
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }

    fn read(text: &str) -> Option<DateTime<Utc>> {
        InstantVisitor.visit_str::<serde::de::value::Error>(text).ok()
    }

    #[test]
    fn instants_read_as_chrono_reads_them() {
        let written = [
            "2026-11-30T02:20:00Z",
            "2026-11-30T02:20:00.1Z",
            "2026-11-30T02:20:00.123Z",
            "2026-11-30T02:20:00.123456Z",
            "2026-11-30T02:20:00.123456789Z",
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "2024-02-29T12:00:00Z",
        ];
        for text in written {
            assert!(parse_utc(text).is_some(), "{text} takes the direct path");
            assert_eq!(read(text), chrono_reads(text), "{text}");
        }
        // Every instant chrono writes reads back as itself.
        for at in [Utc::now(), DateTime::UNIX_EPOCH] {
            let text = serde_json::to_value(at).unwrap();
            let text = text.as_str().unwrap();
            assert!(parse_utc(text).is_some(), "{text} takes the direct path");
            assert_eq!(read(text), Some(at), "{text}");
        }
        // Other forms go to chrono, and read as it reads them.
        let others = [
            "2026-11-30T02:20:00+01:00",
            "2026-11-30T02:20:00.5-07:30",
            "2026-11-30 02:20:00Z",
            "2026-11-30t02:20:00z",
            "2016-12-31T23:59:60Z",
            "2026-11-30T02:20:00.1234567891Z",
            "2026-11-30T02:20:00.Z",
            "2026-02-30T02:20:00Z",
            "2026-11-30T24:00:00Z",
            "+2026-11-30T02:20:00Z",
            "2026-1-30T02:20:00Z",
            "2026-11-30T02:2x:00Z",
            "2026-11-30T02:20:00",
            "",
            "Z",
            "not an instant",
        ];
        for text in others {
            assert!(parse_utc(text).is_none(), "{text} goes to chrono");
            assert_eq!(read(text), chrono_reads(text), "{text}");
        }
    }

    #[test]
    fn optional_instants_read_null_and_absent_as_none() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Row {
            #[serde(default, deserialize_with = "option::deserialize")]
            at: Option<DateTime<Utc>>,
        }
        let read = |text: &str| serde_json::from_str::<Row>(text).map(|row| row.at);
        assert_eq!(read("{}").unwrap(), None);
        assert_eq!(read(r#"{"at":null}"#).unwrap(), None);
        assert_eq!(
            read(r#"{"at":"2026-11-30T02:20:00.5Z"}"#).unwrap(),
            chrono_reads("2026-11-30T02:20:00.5Z")
        );
        let error = read(r#"{"at":"yesterday"}"#).unwrap_err().to_string();
        assert!(error.contains("input contains invalid characters"), "{error}");
    }
}
