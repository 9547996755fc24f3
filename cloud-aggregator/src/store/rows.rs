//! A column-wise buffer for the small tables (anomalies, audit records):
//! every cell kept as its own value, columns by name.

use polars::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub(super) struct Rows {
    text: BTreeMap<&'static str, Vec<Option<String>>>,
    int: BTreeMap<&'static str, Vec<Option<i64>>>,
    float: BTreeMap<&'static str, Vec<Option<f64>>>,
    pub len: usize,
    /// About how many bytes the cells take.
    pub bytes: usize,
}

impl Rows {
    pub fn s(&mut self, col: &'static str, v: Option<String>) {
        self.bytes += 24 + v.as_ref().map_or(0, String::len);
        self.text.entry(col).or_default().push(v);
    }
    pub fn i(&mut self, col: &'static str, v: i64) {
        self.opt_i(col, Some(v));
    }
    pub fn f(&mut self, col: &'static str, v: f64) {
        self.opt_f(col, Some(v));
    }
    pub fn opt_i(&mut self, col: &'static str, v: Option<i64>) {
        self.bytes += 16;
        self.int.entry(col).or_default().push(v);
    }
    pub fn opt_f(&mut self, col: &'static str, v: Option<f64>) {
        self.bytes += 16;
        self.float.entry(col).or_default().push(v);
    }
    /// Ends the row being added.
    pub fn end_row(&mut self) {
        self.len += 1;
    }

    /// Appends every row of `other` (of the same table, so the same columns).
    pub fn absorb(&mut self, other: Rows) {
        for (k, v) in other.text {
            self.text.entry(k).or_default().extend(v);
        }
        for (k, v) in other.int {
            self.int.entry(k).or_default().extend(v);
        }
        for (k, v) in other.float {
            self.float.entry(k).or_default().extend(v);
        }
        self.len += other.len;
        self.bytes += other.bytes;
    }

    pub fn frame(&self) -> PolarsResult<DataFrame> {
        let mut cols: Vec<Column> = Vec::new();
        for (name, v) in &self.int {
            cols.push(Column::new((*name).into(), v.as_slice()));
        }
        for (name, v) in &self.float {
            cols.push(Column::new((*name).into(), v.as_slice()));
        }
        for (name, v) in &self.text {
            cols.push(Column::new((*name).into(), v.as_slice()));
        }
        DataFrame::new(self.len, cols)
    }
}
