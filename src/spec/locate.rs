//! Where things are in a job file: the spans the toml parser gives every
//! key and value, by their dotted path (`sources.x.topic`), so an error
//! found after parsing (an unknown input, an expression that does not
//! check) points at the line and column it is about.

use std::collections::BTreeMap;
use std::ops::Range;
use toml::de::{DeTable, DeValue};

/// Spans of every key and value of a job file, by dotted path.
#[derive(Debug, Clone, Default)]
pub struct Spans(BTreeMap<String, (Range<usize>, Range<usize>)>);

impl Spans {
    pub fn of(table: &DeTable<'_>) -> Spans {
        let mut spans = Spans::default();
        spans.walk("", table);
        spans
    }

    fn walk(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (k, v) in table.iter() {
            let path = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            self.0.insert(path.clone(), (k.span(), v.span()));
            if let DeValue::Table(t) = v.get_ref() {
                self.walk(&path, t);
            }
        }
    }
}

/// A place in a file: 1-based line and column, and how many characters
/// from there it covers on that line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Place {
    pub line: usize,
    pub column: usize,
    pub len: usize,
}

impl Place {
    /// The place of byte range `range` of `text`.
    pub fn of(text: &str, range: Range<usize>) -> Place {
        let start = range.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let end = range.end.clamp(start, line_end);
        Place {
            line: text[..start].matches('\n').count() + 1,
            column: text[line_start..start].chars().count() + 1,
            len: text[start..end].chars().count().max(1),
        }
    }

    /// The start of line `line`.
    pub fn line(line: usize) -> Place {
        Place {
            line,
            column: 0,
            len: 0,
        }
    }
}

/// Finds the place of a component or one of its keys.
pub struct Locator<'a> {
    pub text: &'a str,
    pub spans: &'a Spans,
}

impl Locator<'_> {
    fn path(kind: &str, name: &str) -> String {
        if name.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{name}")
        }
    }

    /// The component's name where it is declared (`[sources.x]`), or its
    /// table's.
    pub fn place_of_component(&self, kind: &str, name: &str) -> Place {
        match self.spans.0.get(&Self::path(kind, name)) {
            Some((key, _)) => Place::of(self.text, key.clone()),
            None => self.place_of_table(kind),
        }
    }

    pub fn place_of_table(&self, kind: &str) -> Place {
        match self.spans.0.get(kind) {
            Some((key, _)) => Place::of(self.text, key.clone()),
            None => Place::line(1),
        }
    }

    /// The value of `key` (a path such as `routes.approved`) in component
    /// `kind.name` (name empty for a table like `[job]`): the key itself
    /// or, when it is a table written elsewhere, the nearest part of it
    /// that is written.
    pub fn place_of_key(&self, kind: &str, name: &str, key: &str) -> Place {
        let owner = Self::path(kind, name);
        let full = format!("{owner}.{key}");
        if let Some((_, value)) = self.spans.0.get(&full) {
            return Place::of(self.text, value.clone());
        }
        // A key inside a value written whole (`routes = { … }`).
        let mut parent = full.as_str();
        while let Some((p, _)) = parent.rsplit_once('.') {
            if p == owner {
                break;
            }
            if let Some((_, value)) = self.spans.0.get(p) {
                return Place::of(self.text, value.clone());
            }
            parent = p;
        }
        // A table whose own keys are written (`[transforms.x.window]`).
        let inside = format!("{full}.");
        if let Some((_, (key, _))) = self
            .spans
            .0
            .range(inside.clone()..)
            .next()
            .filter(|(p, _)| p.starts_with(&inside))
        {
            return Place::of(self.text, key.clone());
        }
        self.place_of_component(kind, name)
    }

    /// The key `key` itself (not its value), for a key that should not be
    /// there.
    pub fn place_of_field(&self, kind: &str, name: &str, key: &str) -> Place {
        match self
            .spans
            .0
            .get(&format!("{}.{key}", Self::path(kind, name)))
        {
            Some((k, _)) => Place::of(self.text, k.clone()),
            None => self.place_of_key(kind, name, key),
        }
    }

    /// Line (1-based) of the component's declaration.
    pub fn component(&self, kind: &str, name: &str) -> usize {
        self.place_of_component(kind, name).line
    }

    /// Line of the `[kind]` table (such as `[job]`), or 1.
    pub fn table(&self, kind: &str) -> usize {
        self.place_of_table(kind).line
    }

    /// Line of `key` inside component `kind.name`.
    pub fn key(&self, kind: &str, name: &str, key: &str) -> usize {
        self.place_of_key(kind, name, key).line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_its_line_column_and_width_on_that_line() {
        let text = "[job]\nname = \"x\"\nrules = \"a\nb\"\n";
        assert_eq!(
            Place::of(text, 13..16),
            Place {
                line: 2,
                column: 8,
                len: 3
            }
        );
        // A span over a line end is cut at it.
        assert_eq!(
            Place::of(text, 25..30),
            Place {
                line: 3,
                column: 9,
                len: 2
            }
        );
    }
}
