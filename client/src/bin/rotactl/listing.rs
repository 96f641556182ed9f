//! Tables and lists: aligned columns (state words coloured on a terminal),
//! and `--watch`, which prints what changed and what went away.

use std::collections::HashMap;
use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use rota_client::Error;
use serde::Serialize;

use crate::output::{Format, print_structured};

/// Table columns of times relative to now.
const RELATIVE_COLUMNS: &[&str] = &["AGE", "REGISTERED", "WHEN"];

/// How often `--watch` lists again.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Colours, for terminals.
#[derive(Debug, Clone, Copy)]
pub enum Color {
    /// Failures.
    Red,
    /// Success, health.
    Green,
    /// Things in progress or held.
    Yellow,
}

/// `text` in `color` when `enabled` and `NO_COLOR` is unset or empty.
pub fn paint(text: &str, color: Color, enabled: bool) -> String {
    if !enabled || std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        return text.to_owned();
    }
    let code = match color {
        Color::Red => 31,
        Color::Green => 32,
        Color::Yellow => 33,
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The colour of a state word in a STATE column.
fn state_color(word: &str) -> Option<Color> {
    match word {
        "succeeded" | "active" | "alive" | "leader" => Some(Color::Green),
        "failed" | "timed_out" | "lost" | "missed" | "unreachable" => Some(Color::Red),
        "pending" | "assigned" | "running" | "cancelled" | "skipped" | "suspended" | "draining" | "candidate" => {
            Some(Color::Yellow)
        }
        _ => None,
    }
}

/// Aligned columns under a header; cells of a STATE (or ROLE) column are
/// coloured on a terminal.
struct Table {
    header: &'static [&'static str],
    widths: Vec<usize>,
    color: bool,
}

impl Table {
    fn new(header: &'static [&'static str], rows: &[Vec<String>]) -> Table {
        let mut table = Table {
            header,
            widths: header.iter().map(|h| h.len()).collect(),
            color: std::io::stdout().is_terminal(),
        };
        table.widen(rows);
        table
    }

    fn widen(&mut self, rows: &[Vec<String>]) {
        for row in rows {
            for (width, cell) in self.widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }

    fn line(&self, cells: &[String], colored: bool) {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&self.widths).enumerate() {
            let column = self.header.get(i).copied().unwrap_or_default();
            let color = (colored && matches!(column, "STATE" | "ROLE"))
                .then(|| state_color(cell))
                .flatten();
            match color {
                Some(color) => out.push_str(&paint(cell, color, self.color)),
                None => out.push_str(cell),
            }
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(width.saturating_sub(cell.chars().count()) + 3));
            }
        }
        println!("{}", out.trim_end());
    }

    fn print_header(&self) {
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        self.line(&header, false);
    }

    fn print_rows(&self, rows: &[Vec<String>]) {
        for row in rows {
            self.line(row, true);
        }
    }
}

/// Prints rows as aligned columns under a header.
pub fn print_table(header: &'static [&'static str], rows: &[Vec<String>]) {
    let table = Table::new(header, rows);
    table.print_header();
    table.print_rows(rows);
}

/// Something `list` commands print: a row in a table, a view in JSON/YAML.
pub trait Listing {
    /// The table's column names.
    const HEADER: &'static [&'static str];
    /// What to say when there is nothing (on stderr).
    const NONE: &'static str;
    /// What JSON and YAML show.
    type View: Serialize;
    /// Identity, for `--watch`.
    fn key(&self) -> String;
    /// The table row.
    fn row(&self) -> Vec<String>;
    /// The JSON/YAML view.
    fn view(&self) -> Self::View;
}

/// Prints what `fetch` lists; with `watch`, keeps listing and prints what
/// changed (table rows without the header; one JSON object per line; one
/// YAML document each), and what went away, until interrupted.
pub async fn list<T, F, Fut>(fetch: F, format: Format, watch: bool) -> anyhow::Result<()>
where
    T: Listing,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<T>, Error>>,
{
    let items = fetch().await?;
    let rows: Vec<Vec<String>> = items.iter().map(T::row).collect();
    let mut table = Table::new(T::HEADER, &rows);
    match format {
        Format::Table if items.is_empty() && !watch => eprintln!("{}", T::NONE),
        Format::Table => {
            table.print_header();
            table.print_rows(&rows);
        }
        _ if watch => items.iter().try_for_each(|item| print_event(&item.view(), format))?,
        _ => print_structured(&items.iter().map(T::view).collect::<Vec<_>>(), format)?,
    }
    if !watch {
        return Ok(());
    }
    // What was last printed of each item: its row without the columns of
    // relative times (which change by themselves), or its view as JSON; a
    // change that shows nowhere prints nothing.
    let shown = |item: &T| -> anyhow::Result<String> {
        Ok(match format {
            Format::Table => item
                .row()
                .into_iter()
                .zip(T::HEADER)
                .filter(|(_, column)| !RELATIVE_COLUMNS.contains(column))
                .map(|(cell, _)| cell)
                .collect::<Vec<_>>()
                .join("\t"),
            _ => serde_json::to_string(&item.view())?,
        })
    };
    let mut seen: HashMap<String, String> = HashMap::new();
    for item in &items {
        seen.insert(item.key(), shown(item)?);
    }
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let items = match fetch().await {
            Ok(items) => items,
            Err(e) => {
                eprintln!("warning: {e}; listing again in {}s", WATCH_INTERVAL.as_secs());
                continue;
            }
        };
        let mut now: HashMap<String, String> = HashMap::new();
        let mut changed = Vec::new();
        for item in items {
            let key = item.key();
            let text = shown(&item)?;
            if seen.get(&key) != Some(&text) {
                changed.push(item);
            }
            now.insert(key, text);
        }
        if format == Format::Table {
            let rows: Vec<Vec<String>> = changed.iter().map(T::row).collect();
            table.widen(&rows);
            table.print_rows(&rows);
        } else {
            changed.iter().try_for_each(|item| print_event(&item.view(), format))?;
        }
        let mut gone: Vec<&String> = seen.keys().filter(|key| !now.contains_key(*key)).collect();
        gone.sort();
        for key in gone {
            match format {
                Format::Table => eprintln!("{key}: gone"),
                _ => print_event(&serde_json::json!({ "gone": key }), format)?,
            }
        }
        seen = now;
    }
}

/// One changed object of a watch: a line of JSON, or a YAML document.
fn print_event<T: Serialize>(value: &T, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Yaml => print!("---\n{}", serde_norway::to_string(value)?),
        _ => println!("{}", serde_json::to_string(value)?),
    }
    Ok(())
}
