//! What the demo prints. On a terminal: a progress bar per stage (canary weight out of
//! `maxWeight`, failed checks out of `threshold`, the last event) with the events scrolling above
//! it. Otherwise (a pipe, CI): one timestamped line per event or status change.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use console::style;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::cluster::{EventRow, Status, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Live,
    Plain,
}

pub struct Screen {
    mode: Mode,
}

impl Screen {
    /// Live when stdout is a terminal, plain lines otherwise.
    pub fn detect() -> Screen {
        Screen {
            mode: if std::io::stdout().is_terminal() {
                Mode::Live
            } else {
                Mode::Plain
            },
        }
    }

    pub fn line(&self, text: impl AsRef<str>) {
        println!("{}", text.as_ref());
    }

    pub fn heading(&self, text: &str) {
        println!();
        println!("{}", style(text).bold());
    }

    /// A command the demo runs, as the user would type it.
    pub fn command(&self, text: &str) {
        println!("  {}", style(format!("$ {text}")).dim());
    }

    /// A finished step: `✓ text  (1.2 s)`.
    pub fn done(&self, text: &str, took: Duration) {
        println!(
            "{} {text}  {}",
            style("✓").green().bold(),
            style(format!("({:.1} s)", took.as_secs_f64())).dim()
        );
    }

    pub fn failed(&self, text: &str) {
        println!("{} {text}", style("✗").red().bold());
    }

    /// Starts following one stage of the demo (initialization, a release).
    pub fn stage(&self, label: &str, max_weight: i64, threshold: i64) -> Stage {
        let bar = match self.mode {
            Mode::Plain => None,
            Mode::Live => {
                let bar = ProgressBar::with_draw_target(
                    Some(max_weight.max(1) as u64),
                    ProgressDrawTarget::stdout(),
                );
                let template = "  {spinner:.cyan} {prefix:<12.bold} {bar:20.cyan/blue} weight {pos:>2}%/{len}%  {wide_msg}";
                // The template is a constant; a bad one would only lose the styling.
                if let Ok(s) = ProgressStyle::with_template(template) {
                    bar.set_style(s.progress_chars("█▉▊▋▌▍▎▏ "));
                }
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
        };
        Stage {
            bar,
            label: label.to_owned(),
            started: Instant::now(),
            threshold,
            max_weight,
            status: None,
            last_event: String::new(),
        }
    }

    /// `kubectl get`-style columns: left-aligned, three spaces apart.
    pub fn table(&self, table: &Table) {
        for line in columns(std::iter::once(&table.headers).chain(&table.rows), 3, "") {
            println!("{line}");
        }
    }

    /// The Events section of `kubectl describe`, ages relative to `now` (unix seconds).
    pub fn events(&self, events: &[EventRow], now: i64) {
        println!("Events:");
        if events.is_empty() {
            println!("  <none>");
            return;
        }
        let mut rows = vec![
            ["Type", "Reason", "Age", "From", "Message"].map(String::from),
            ["----", "------", "----", "----", "-------"].map(String::from),
        ];
        for e in events {
            let age = flagger_testbed::table::human_duration(now - e.last_seen);
            let age = if e.count > 1 {
                format!(
                    "{age} (x{} over {})",
                    e.count,
                    flagger_testbed::table::human_duration(now - e.first_seen)
                )
            } else {
                age
            };
            rows.push([
                e.type_.clone(),
                e.reason.clone(),
                age,
                e.from.clone(),
                e.message.clone(),
            ]);
        }
        for line in columns(rows.iter(), 2, "  ") {
            println!("{line}");
        }
    }
}

/// Rows padded into columns (the last column is not padded), like Go's tabwriter.
fn columns<'a, R, C>(
    rows: impl Iterator<Item = &'a R> + Clone,
    gap: usize,
    indent: &str,
) -> Vec<String>
where
    R: AsRef<[C]> + 'a + ?Sized,
    C: AsRef<str> + 'a,
{
    let mut widths: Vec<usize> = Vec::new();
    for row in rows.clone() {
        for (i, cell) in row.as_ref().iter().enumerate() {
            let w = cell.as_ref().chars().count();
            if widths.len() <= i {
                widths.push(w);
            } else {
                widths[i] = widths[i].max(w);
            }
        }
    }
    rows.map(|row| {
        let cells = row.as_ref();
        let mut line = indent.to_owned();
        for (i, cell) in cells.iter().enumerate() {
            let cell = cell.as_ref();
            line.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i] - cell.chars().count() + gap;
                line.push_str(&" ".repeat(pad));
            }
        }
        line
    })
    .collect()
}

/// One stage being followed.
pub struct Stage {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    threshold: i64,
    max_weight: i64,
    status: Option<Status>,
    last_event: String,
}

fn wall_clock() -> String {
    jiff::Zoned::now().strftime("%H:%M:%S%.3f").to_string()
}

impl Stage {
    fn summary(&self, s: &Status) -> String {
        format!(
            "{:<12} weight {:>2}%/{}%  failed checks {}/{}",
            if s.phase.is_empty() { "-" } else { &s.phase },
            s.weight,
            self.max_weight,
            s.failed_checks,
            self.threshold
        )
    }

    fn checks(&self, s: &Status) -> String {
        let text = format!("failed checks {}/{}", s.failed_checks, self.threshold);
        if s.failed_checks > 0 {
            style(text).yellow().to_string()
        } else {
            text
        }
    }

    /// A new event (or a repeat of one: `count` went up).
    pub fn event(&mut self, e: &EventRow, status: &Status) {
        self.last_event = e.message.clone();
        let repeat = if e.count > 1 {
            format!(" (x{})", e.count)
        } else {
            String::new()
        };
        match &self.bar {
            Some(bar) => {
                let kind = if e.type_ == "Warning" {
                    style(format!("{:<7}", e.type_)).yellow().to_string()
                } else {
                    style(format!("{:<7}", e.type_)).dim().to_string()
                };
                let line = format!(
                    "  {}  {kind}  {}{repeat}",
                    style(format!("{:>6.1}s", self.started.elapsed().as_secs_f64())).dim(),
                    e.message
                );
                // One line per event keeps the view readable; `describe` at the end has them whole.
                let width = console::Term::stdout().size().1 as usize;
                bar.println(console::truncate_str(&line, width, "…"));
                self.status(status);
            }
            None => {
                println!(
                    "{}  {:<12}  {}  {:<7}  {}{repeat}",
                    wall_clock(),
                    self.label,
                    self.summary(status),
                    e.type_,
                    e.message
                );
                self.status = Some(status.clone());
            }
        }
    }

    /// The canary's status as of now; shown when it changed.
    pub fn status(&mut self, s: &Status) {
        match &self.bar {
            Some(bar) => {
                bar.set_prefix(if s.phase.is_empty() {
                    "Waiting".to_owned()
                } else {
                    s.phase.clone()
                });
                bar.set_position(s.weight.clamp(0, self.max_weight) as u64);
                bar.set_message(format!(
                    "{}  {}",
                    self.checks(s),
                    style(&self.last_event).dim()
                ));
                self.status = Some(s.clone());
            }
            None => {
                if self.status.as_ref() != Some(s) {
                    // lastAppliedSpec changes alone are not worth a line.
                    let visible = |x: &Status| (x.phase.clone(), x.weight, x.failed_checks);
                    if self.status.as_ref().map(visible) != Some(visible(s)) {
                        println!("{}  {:<12}  {}", wall_clock(), self.label, self.summary(s));
                    }
                    self.status = Some(s.clone());
                }
            }
        }
    }

    /// How long the stage has run.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Removes the bar (the caller prints the outcome).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn columns_pad_all_but_the_last_cell() {
        let rows = [
            vec!["NAMESPACE", "NAME", "STATUS"],
            vec!["test", "podinfo", "Succeeded"],
        ];
        assert_eq!(
            columns(rows.iter(), 3, ""),
            [
                "NAMESPACE   NAME      STATUS",
                "test        podinfo   Succeeded"
            ]
        );
    }
}
