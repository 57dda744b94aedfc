//! How a job's problems are shown, for job files and SQL jobs alike: the
//! place and the message on one line (`path:line L, column C: …`), then
//! the line of the file with the place marked, then the hint.

use super::SpecError;
use std::fmt::Write;

/// One problem as the user sees it; `source` is the file's text, when it
/// could be read.
pub fn problem(out: &mut String, path: &str, source: Option<&str>, e: &SpecError) {
    let _ = write!(out, "{path}");
    if e.line > 0 {
        let _ = write!(out, ":line {}", e.line);
        if e.column > 0 {
            let _ = write!(out, ", column {}", e.column);
        }
        out.push(':');
    } else {
        out.push_str(": ");
    }
    if e.line > 0 {
        out.push(' ');
    }
    if let Some(c) = &e.component {
        let _ = write!(out, "{c}: ");
    }
    out.push_str(&e.message);
    out.push('\n');
    if let Some(text) = source.filter(|_| e.line > 0 && e.column > 0) {
        if let Some(line) = text.lines().nth(e.line - 1) {
            let number = e.line.to_string();
            let gutter = " ".repeat(number.len());
            let lead: String = line
                .chars()
                .take(e.column - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{gutter} |");
            let _ = writeln!(out, "{number} | {line}");
            let _ = writeln!(out, "{gutter} | {lead}{}", "^".repeat(e.len.max(1)));
        }
    }
    if let Some(h) = &e.hint {
        let _ = writeln!(out, "  hint: {h}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_shows_its_line_with_the_place_marked_then_its_hint() {
        let e = SpecError {
            line: 2,
            column: 11,
            len: 3,
            component: Some("transforms.t".into()),
            message: "unknown input `txx`".into(),
            hint: Some("did you mean `tx`?".into()),
        };
        let mut out = String::new();
        problem(
            &mut out,
            "j.toml",
            Some("[transforms.t]\ninputs = [\"txx\"]\n"),
            &e,
        );
        assert_eq!(
            out,
            "j.toml:line 2, column 11: transforms.t: unknown input `txx`\n  |\n2 | inputs = [\"txx\"]\n  |           ^^^\n  hint: did you mean `tx`?\n"
        );
    }
}
