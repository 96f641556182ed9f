//! Memory quantities: `512Mi`, `2Gi`, `1G`, `1500000` (bytes).

use byte_unit::Byte;

/// Parses a memory quantity to bytes. Binary suffixes (`Ki`, `Mi`, `Gi`,
/// `Ti`, optionally followed by `B`) are powers of 1024; decimal ones (`K`,
/// `M`, `G`, `T`) powers of 1000; no suffix means bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    Byte::parse_str(text, true)
        .map(|bytes| bytes.as_u64())
        .map_err(|e| e.to_string())
}

/// Renders bytes in the largest binary unit that divides them exactly.
pub fn format_bytes(bytes: u64) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        let unit = 1u64 << shift;
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}
