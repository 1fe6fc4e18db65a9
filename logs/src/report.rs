//! Aggregation for the reports: statements grouped by (kind, normalized query) with a log-bucketed
//! duration histogram (bounded memory whatever the input size), exemplar trace ids, the propagation-gap
//! counters, and a duration-over-time series.

use std::collections::HashMap;

use sqlcommenter::{carrier, normalize, Dialect};

use crate::correlate::Source;
use crate::message::Kind;
use crate::statement::Statement;

/// Histogram buckets: 5 % wide, from 1 µs up.
const BUCKET_GROWTH: f64 = 1.05;
const BUCKETS: usize = 520;
/// Most groups kept; later new queries are counted under an overflow group.
pub const MAX_GROUPS: usize = 5000;
/// Exemplars kept per group (the slowest correlated executions).
pub const EXEMPLARS: usize = 3;
const CACHE_MAX: usize = 50_000;
const MAX_GAP_VALUES: usize = 1000;
const MAX_SERIES: usize = 600;
/// Longest client name an `application_name` carrier keeps (63 − 55-byte traceparent − `@`).
const CARRIER_NAME_MAX: usize = carrier::APPLICATION_NAME_MAX - sqlcommenter::traceparent::TRACEPARENT_LEN - 1;

/// A fixed-size log histogram of durations in milliseconds (5 % buckets from 1 µs: 2 KiB, so one per
/// query group and per time bucket stays bounded; hdrhistogram at this precision is 10× the size).
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: Box::new([0; BUCKETS]), total: 0 }
    }
}

impl Histogram {
    fn bucket(ms: f64) -> usize {
        let us = ms * 1000.0;
        if us <= 1.0 {
            return 0;
        }
        ((us.ln() / BUCKET_GROWTH.ln()) as usize + 1).min(BUCKETS - 1)
    }

    /// Records one duration.
    pub fn record(&mut self, ms: f64) {
        let b = Self::bucket(ms);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
    }

    /// The `q` quantile (0..=1), accurate to the bucket width (±2.5 %).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                if i == 0 {
                    return Some(0.001);
                }
                // geometric middle of the bucket
                let lo = BUCKET_GROWTH.powi(i as i32 - 1);
                return Some(lo * BUCKET_GROWTH.sqrt() / 1000.0);
            }
        }
        None
    }
}

/// One group of statements.
#[derive(Debug, Clone)]
pub struct Group {
    /// Protocol step.
    pub kind: Kind,
    /// Normalized query.
    pub query: String,
    /// Value of the `--group-tag` tag (empty when not grouping by a tag or the tag is absent).
    pub tag: String,
    /// Executions.
    pub count: u64,
    /// Executions with a logged duration.
    pub timed: u64,
    /// Executions with trace context.
    pub with_context: u64,
    /// Failed executions.
    pub errors: u64,
    /// Sum of durations (ms).
    pub total_ms: f64,
    /// Slowest duration (ms), when any execution was timed.
    pub max_ms: Option<f64>,
    /// Duration histogram.
    pub hist: Histogram,
    /// Slowest correlated executions: (duration ms, trace id).
    pub exemplars: Vec<(f64, String)>,
}

impl Group {
    /// Median duration.
    pub fn p50(&self) -> Option<f64> {
        self.quantile(0.5)
    }
    /// 95th percentile duration.
    pub fn p95(&self) -> Option<f64> {
        self.quantile(0.95)
    }
    fn quantile(&self, q: f64) -> Option<f64> {
        Some(self.hist.quantile(q)?.min(self.max_ms?))
    }
    /// Sum of durations, when any execution was timed.
    pub fn total(&self) -> Option<f64> {
        (self.timed > 0).then_some(self.total_ms)
    }
}

/// Context coverage of one value of one dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Statements with trace context from a comment.
    pub comment: u64,
    /// From an application_name carrier.
    pub application_name: u64,
    /// Without context.
    pub none: u64,
}

impl Coverage {
    /// All statements.
    pub fn total(&self) -> u64 {
        self.comment + self.application_name + self.none
    }
    /// Share with context (0..=1).
    pub fn share(&self) -> f64 {
        let t = self.total();
        if t == 0 {
            0.0
        } else {
            (self.comment + self.application_name) as f64 / t as f64
        }
    }
}

/// The dimensions of the gap report.
pub const GAP_DIMENSIONS: [&str; 4] = ["application_name", "user", "database", "kind"];

/// One point of the duration-over-time series.
#[derive(Debug, Clone, Default)]
pub struct SeriesPoint {
    /// Bucket start, µs since the epoch.
    pub start_us: i64,
    /// Statements.
    pub count: u64,
    /// Sum of durations.
    pub total_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Durations.
    pub hist: Histogram,
}

impl SeriesPoint {
    fn merge(&mut self, o: &SeriesPoint) {
        self.count += o.count;
        self.total_ms += o.total_ms;
        self.max_ms = self.max_ms.max(o.max_ms);
        self.hist.merge(&o.hist);
    }
}

/// One bin of the timeline chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeBin {
    /// Start, µs since the epoch.
    pub start_us: i64,
    /// Width, µs.
    pub width_us: i64,
    /// Timed statements.
    pub count: u64,
    /// Median, 95th percentile and slowest duration (ms), when any.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// Slowest.
    pub max: Option<f64>,
}

/// One statement in a trace's waterfall.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceStep {
    /// Start (log time − duration), µs since the epoch.
    pub start_us: i64,
    /// Duration, ms (0 when not logged).
    pub duration_ms: f64,
    /// Protocol step.
    pub kind: Kind,
    /// The query on one line (comment cut out), shortened.
    pub query: String,
    /// The parent span id the statement ran under.
    pub parent_span: String,
    /// Failed.
    pub error: bool,
    /// Its auto_explain plan's nodes: (depth, label, node time in ms when analyzed).
    pub plan: Vec<(usize, String, Option<f64>)>,
}

/// A trace's statements, for its waterfall.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceRows {
    /// Trace id.
    pub trace_id: String,
    /// Database time in the trace, ms.
    pub db_ms: f64,
    /// Statements in log order.
    pub steps: Vec<TraceStep>,
}

/// Traces kept for waterfalls (the half with the least database time is dropped when full).
const MAX_TRACES: usize = 4000;
/// Statements kept per trace.
const MAX_STEPS: usize = 200;
/// Statements kept over all traces (with [`MAX_STEPS`] and [`MAX_TRACES`], a few MB at most).
const MAX_ALL_STEPS: usize = 20_000;
/// Plan nodes kept per statement.
const MAX_PLAN_NODES: usize = 24;

/// Everything the reports need, in bounded memory.
#[derive(Debug)]
pub struct Aggregate {
    groups: Vec<Group>,
    index: HashMap<(Kind, String, String), usize>,
    group_tag: Option<String>,
    cache: HashMap<String, usize>,
    key_buf: String,
    gaps: [HashMap<String, Coverage>; 4],
    /// All non-carrier statements.
    pub statements: u64,
    /// Carrier statements left out.
    pub carriers: u64,
    /// Statements by context source.
    pub by_source: Coverage,
    /// Earliest and latest log time.
    pub time_range: Option<(i64, i64)>,
    series: Vec<SeriesPoint>,
    series_origin: Option<i64>,
    series_width_us: i64,
    min_duration_ms: f64,
    traces: HashMap<String, TraceRows>,
    trace_steps: usize,
}

impl Default for Aggregate {
    fn default() -> Self {
        Self::new(0.0)
    }
}

fn overflow_key() -> String {
    "(other queries: group limit reached)".to_owned()
}

impl Aggregate {
    /// An empty aggregate; statements faster than `min_duration_ms` are left out of the groups.
    pub fn new(min_duration_ms: f64) -> Self {
        Aggregate {
            groups: Vec::new(),
            index: HashMap::new(),
            group_tag: None,
            cache: HashMap::new(),
            key_buf: String::new(),
            gaps: Default::default(),
            statements: 0,
            carriers: 0,
            by_source: Coverage::default(),
            time_range: None,
            series: Vec::new(),
            series_origin: None,
            series_width_us: 1000,
            min_duration_ms,
            traces: HashMap::new(),
            trace_steps: 0,
        }
    }

    /// Also groups statements by the value of this sqlcommenter tag (e.g. `route`, `application`).
    pub fn with_group_tag(mut self, key: Option<String>) -> Self {
        self.group_tag = key;
        self
    }

    /// The tag statements are grouped by, if any.
    pub fn group_tag(&self) -> Option<&str> {
        self.group_tag.as_deref()
    }

    /// Adds one statement.
    pub fn add(&mut self, st: &Statement) {
        if st.carrier {
            self.carriers += 1;
            return;
        }
        self.statements += 1;
        bump(&mut self.by_source, st.source);
        let app = carrier::strip_carrier(&st.application_name);
        let (user, db) = (st.user.as_deref().unwrap_or(""), st.database.as_deref().unwrap_or(""));
        for (i, v) in [app, user, db, st.kind.as_str()].into_iter().enumerate() {
            let map = &mut self.gaps[i];
            if let Some(c) = map.get_mut(v) {
                bump(c, st.source);
            } else {
                let k = if map.len() < MAX_GAP_VALUES { v.to_owned() } else { "(other)".to_owned() };
                bump(map.entry(k).or_default(), st.source);
            }
        }
        if let Some(t) = st.time_us {
            self.time_range = Some(match self.time_range {
                None => (t, t),
                Some((a, b)) => (a.min(t), b.max(t)),
            });
            if let Some(d) = st.duration_ms {
                self.add_series(t, d);
            }
        }
        self.add_trace_step(st);
        if st.duration_ms.unwrap_or(0.0) < self.min_duration_ms {
            return;
        }
        let gi = self.group_index(st);
        let g = &mut self.groups[gi];
        g.count += 1;
        if st.context.is_some() {
            g.with_context += 1;
        }
        if st.error.is_some() {
            g.errors += 1;
        }
        if let Some(d) = st.duration_ms {
            g.timed += 1;
            g.total_ms += d;
            g.max_ms = Some(g.max_ms.map_or(d, |m| m.max(d)));
            g.hist.record(d);
            if let Some(ctx) = &st.context {
                let slot = g.exemplars.len() < EXEMPLARS || g.exemplars.last().is_some_and(|(m, _)| *m < d);
                if slot {
                    let id = ctx.traceparent.trace_id_hex();
                    if let Some(e) = g.exemplars.iter_mut().find(|(_, t)| *t == id) {
                        e.0 = e.0.max(d);
                    } else {
                        if g.exemplars.len() == EXEMPLARS {
                            g.exemplars.pop();
                        }
                        g.exemplars.push((d, id));
                    }
                    g.exemplars.sort_by(|a, b| b.0.total_cmp(&a.0));
                }
            }
        }
    }

    fn group_index(&mut self, st: &Statement) -> usize {
        let (a, b) = st.query_without_comment();
        self.key_buf.clear();
        self.key_buf.push_str(st.kind.as_str());
        self.key_buf.push('\0');
        let tag = match &self.group_tag {
            Some(k) => st.tags.get(k).map_or("", String::as_str),
            None => "",
        };
        self.key_buf.push_str(tag);
        self.key_buf.push('\0');
        let text_start = self.key_buf.len();
        self.key_buf.push_str(a);
        self.key_buf.push_str(b);
        // Cache by raw text (minus the comment): avoids re-normalizing repeated prepared statements.
        if let Some(&i) = self.cache.get(self.key_buf.as_str()) {
            return i;
        }
        let norm = normalize(&self.key_buf[text_start..], Dialect::Postgres);
        let tag = tag.to_owned();
        let i = match self.index.get(&(st.kind, tag.clone(), norm.clone())) {
            Some(&i) => i,
            None => {
                let (kind, tag, q) = if self.groups.len() < MAX_GROUPS {
                    (st.kind, tag, norm)
                } else {
                    (Kind::Statement, String::new(), overflow_key())
                };
                if let Some(&i) = self.index.get(&(kind, tag.clone(), q.clone())) {
                    i
                } else {
                    self.groups.push(Group {
                        kind,
                        query: q.clone(),
                        tag: tag.clone(),
                        count: 0,
                        timed: 0,
                        with_context: 0,
                        errors: 0,
                        total_ms: 0.0,
                        max_ms: None,
                        hist: Histogram::default(),
                        exemplars: Vec::new(),
                    });
                    self.index.insert((kind, tag, q), self.groups.len() - 1);
                    self.groups.len() - 1
                }
            }
        };
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(self.key_buf.clone(), i);
        i
    }

    fn add_series(&mut self, t: i64, d: f64) {
        let origin = *self.series_origin.get_or_insert(t);
        if t < origin {
            // Out-of-order input before the first point: fold into the first bucket.
            if let Some(p) = self.series.first_mut() {
                p.count += 1;
                p.total_ms += d;
                p.max_ms = p.max_ms.max(d);
                p.hist.record(d);
            }
            return;
        }
        let mut idx = ((t - origin) / self.series_width_us) as usize;
        while idx >= MAX_SERIES {
            // Double the bucket width and merge pairs.
            self.series_width_us *= 2;
            let old = std::mem::take(&mut self.series);
            for p in old {
                let j = ((p.start_us - origin) / self.series_width_us) as usize;
                self.ensure_series(j, origin);
                self.series[j].merge(&p);
            }
            idx = ((t - origin) / self.series_width_us) as usize;
        }
        self.ensure_series(idx, origin);
        let p = &mut self.series[idx];
        p.count += 1;
        p.total_ms += d;
        p.max_ms = p.max_ms.max(d);
        p.hist.record(d);
    }

    fn add_trace_step(&mut self, st: &Statement) {
        let (Some(ctx), Some(end)) = (&st.context, st.time_us) else { return };
        let id = ctx.traceparent.trace_id_hex();
        let full = self.traces.len() >= MAX_TRACES || self.trace_steps >= MAX_ALL_STEPS;
        if full && !self.traces.contains_key(&id) {
            // Keep the half with the most database time.
            let mut by_time: Vec<(f64, String)> = self.traces.values().map(|t| (t.db_ms, t.trace_id.clone())).collect();
            by_time.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, t) in by_time.iter().take(by_time.len().div_ceil(2)) {
                if let Some(gone) = self.traces.remove(t) {
                    self.trace_steps -= gone.steps.len();
                }
            }
        }
        let t = self.traces.entry(id.clone()).or_insert_with(|| TraceRows { trace_id: id, ..TraceRows::default() });
        let d = st.duration_ms.unwrap_or(0.0);
        t.db_ms += d;
        if t.steps.len() >= MAX_STEPS || self.trace_steps >= MAX_ALL_STEPS {
            return;
        }
        self.trace_steps += 1;
        let (a, b) = st.query_without_comment();
        let plan = st
            .plan_format
            .and_then(|f| crate::plan::parse(&st.plan, f))
            .map(|root| {
                let mut out = Vec::new();
                flatten(&root, 0, &mut out);
                out
            })
            .unwrap_or_default();
        t.steps.push(TraceStep {
            start_us: end - (d * 1000.0) as i64,
            duration_ms: d,
            kind: st.kind,
            query: crate::text::one_line(&format!("{a} {b}"), 120),
            parent_span: ctx.traceparent.parent_id_hex(),
            error: st.error.is_some(),
            plan,
        });
    }

    /// The `n` traces with the most database time, their statements in start order.
    pub fn slowest_traces(&self, n: usize) -> Vec<TraceRows> {
        let mut v: Vec<&TraceRows> = self.traces.values().collect();
        v.sort_by(|a, b| b.db_ms.total_cmp(&a.db_ms).then_with(|| a.trace_id.cmp(&b.trace_id)));
        v.into_iter()
            .take(n)
            .map(|t| {
                let mut t = t.clone();
                t.steps.sort_by_key(|s| s.start_us);
                t
            })
            .collect()
    }

    /// The timed statements over time in at most `bins` bins (adjacent buckets merged).
    pub fn timeline(&self, bins: usize) -> Vec<TimeBin> {
        let (first, last) =
            match (self.series.iter().position(|p| p.count > 0), self.series.iter().rposition(|p| p.count > 0)) {
                (Some(a), Some(b)) => (a, b),
                _ => return Vec::new(),
            };
        let span = &self.series[first..=last];
        let per = span.len().div_ceil(bins.max(1));
        span.chunks(per)
            .map(|c| {
                let mut m = SeriesPoint { start_us: c[0].start_us, ..SeriesPoint::default() };
                for p in c {
                    m.merge(p);
                }
                let max = (m.count > 0).then_some(m.max_ms);
                let q = |x: f64| Some(m.hist.quantile(x)?.min(m.max_ms));
                TimeBin {
                    start_us: m.start_us,
                    width_us: self.series_width_us * c.len() as i64,
                    count: m.count,
                    p50: q(0.5),
                    p95: q(0.95),
                    max,
                }
            })
            .collect()
    }

    fn ensure_series(&mut self, idx: usize, origin: i64) {
        while self.series.len() <= idx {
            let start_us = origin + self.series.len() as i64 * self.series_width_us;
            self.series.push(SeriesPoint { start_us, ..Default::default() });
        }
    }

    /// Groups sorted by `sort`.
    pub fn top_groups(&self, sort: SortBy, limit: usize) -> Vec<&Group> {
        let mut v: Vec<&Group> = self.groups.iter().collect();
        let key = |g: &Group| match sort {
            SortBy::Max => g.max_ms.unwrap_or(-1.0),
            SortBy::Total => g.total_ms,
            SortBy::Count => g.count as f64,
            SortBy::P95 => g.p95().unwrap_or(0.0),
        };
        v.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.query.cmp(&b.query)));
        v.truncate(limit);
        v
    }

    /// Number of groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Gap rows of one dimension (index into [`GAP_DIMENSIONS`]), most statements without context first.
    pub fn gaps(&self, dim: usize) -> Vec<(&str, Coverage)> {
        let map = &self.gaps[dim];
        let mut merged: HashMap<&str, Coverage> = HashMap::new();
        for (k, c) in map {
            // The carrier cuts the client's name to what fits next to the traceparent ("checkou@00-..."):
            // count a cut name under the one longer name it is the start of, when there is exactly one.
            let mut key = k.as_str();
            if dim == 0 && k.len() == CARRIER_NAME_MAX {
                let mut longer = map.keys().filter(|o| o.len() > k.len() && o.starts_with(k.as_str()));
                if let (Some(full), None) = (longer.next(), longer.next()) {
                    key = full.as_str();
                }
            }
            let e = merged.entry(key).or_default();
            e.comment += c.comment;
            e.application_name += c.application_name;
            e.none += c.none;
        }
        let mut v: Vec<(&str, Coverage)> = merged.into_iter().collect();
        v.sort_by(|a, b| b.1.none.cmp(&a.1.none).then(b.1.total().cmp(&a.1.total())).then(a.0.cmp(b.0)));
        v
    }

    /// The duration-over-time series and its bucket width in µs.
    pub fn series(&self) -> (&[SeriesPoint], i64) {
        (&self.series, self.series_width_us)
    }
}

fn flatten(node: &crate::plan::PlanNode, depth: usize, out: &mut Vec<(usize, String, Option<f64>)>) {
    if out.len() >= MAX_PLAN_NODES {
        return;
    }
    out.push((depth, node.label(), node.total_ms));
    for c in &node.children {
        flatten(c, depth + 1, out);
    }
}

fn bump(c: &mut Coverage, s: Source) {
    match s {
        Source::Comment => c.comment += 1,
        Source::ApplicationName => c.application_name += 1,
        Source::None => c.none += 1,
    }
}

/// A duration cell, the same in every report: milliseconds with three decimals, `-` when not logged.
pub fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

/// A share cell: `n/d` as a percentage with one decimal, `-` when `d` is 0.
pub fn fmt_pct(n: u64, d: u64) -> String {
    if d == 0 {
        "-".into()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / d as f64)
    }
}

/// One row of the slowest-statements table, as every report shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopRow {
    /// 1-based rank.
    pub rank: usize,
    /// Protocol step.
    pub kind: Kind,
    /// Executions.
    pub count: u64,
    /// Median, 95th percentile, slowest and total duration (ms), when timed.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// Slowest.
    pub max: Option<f64>,
    /// Sum.
    pub total: Option<f64>,
    /// Executions with trace context.
    pub with_context: u64,
    /// Failed executions.
    pub errors: u64,
    /// `--group-tag` key and this group's value.
    pub tag: Option<(String, String)>,
    /// Normalized query.
    pub query: String,
    /// Slowest correlated executions: (duration ms, trace id).
    pub exemplars: Vec<(f64, String)>,
}

/// The summary every report opens with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Statements (carriers left out).
    pub statements: u64,
    /// Carrier statements left out.
    pub carriers: u64,
    /// Log lines read.
    pub lines: u64,
    /// Log records.
    pub records: u64,
    /// Lines not understood.
    pub unknown: u64,
    /// Lines of other programs/loggers.
    pub foreign: u64,
    /// Statements by context source.
    pub by_source: Coverage,
    /// Earliest and latest log time.
    pub time_range: Option<(i64, i64)>,
    /// auto_explain plans attached to their statement.
    pub plans_attached: u64,
    /// Bare `duration:` lines without a statement.
    pub unpaired_durations: u64,
}

impl Aggregate {
    /// The slowest-statements table.
    pub fn top_rows(&self, sort: SortBy, limit: usize) -> Vec<TopRow> {
        self.top_groups(sort, limit)
            .into_iter()
            .enumerate()
            .map(|(i, g)| TopRow {
                rank: i + 1,
                kind: g.kind,
                count: g.count,
                p50: g.p50(),
                p95: g.p95(),
                max: g.max_ms,
                total: g.total(),
                with_context: g.with_context,
                errors: g.errors,
                tag: self.group_tag.as_ref().map(|k| (k.clone(), g.tag.clone())),
                query: g.query.clone(),
                exemplars: g.exemplars.clone(),
            })
            .collect()
    }

    /// The summary.
    pub fn summary(&self, parse: &crate::parser::ParseStats, asm: &crate::statement::AssembleStats) -> Summary {
        Summary {
            statements: self.statements,
            carriers: self.carriers,
            lines: parse.lines,
            records: parse.records,
            unknown: parse.unknown,
            foreign: parse.foreign,
            by_source: self.by_source,
            time_range: self.time_range,
            plans_attached: asm.plans_attached,
            unpaired_durations: asm.unpaired_durations,
        }
    }
}

/// Order of the top-queries table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Slowest single execution.
    Max,
    /// Sum of durations.
    Total,
    /// Executions.
    Count,
    /// 95th percentile.
    P95,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_never_timed_shows_no_durations() {
        let mut agg = Aggregate::new(0.0);
        let error = Some(crate::statement::SqlError { message: "boom".into(), sql_state: None });
        let st = Statement { query: "select 1".into(), error, ..Statement::default() };
        agg.add(&st);
        let rows = agg.top_rows(SortBy::Max, 10);
        assert_eq!((rows[0].max, rows[0].total, rows[0].p50), (None, None, None));
        assert_eq!((fmt_ms(rows[0].max), fmt_ms(Some(0.0))), ("-".to_owned(), "0.000".to_owned()));
        // text and HTML render the same cell
        let text = crate::text::top_table(&agg, SortBy::Max, 10);
        let html = crate::html::top_table(&rows, None);
        assert!(text.contains("         -            -"), "{text}");
        assert!(html.contains("<td>-</td><td>-</td><td>-</td><td>-</td>") && !html.contains("0.000"), "{html}");
    }

    #[test]
    fn the_trace_store_stays_bounded_and_keeps_the_slowest() {
        let mut agg = Aggregate::new(0.0);
        for i in 0..30_000u32 {
            let mut trace = [0u8; 16];
            trace[12..].copy_from_slice(&(i + 1).to_be_bytes());
            let tp = sqlcommenter::TraceParent::new(trace, [1; 8], 1).unwrap();
            let st = Statement {
                time_us: Some(1_000_000 + i64::from(i)),
                duration_ms: Some(if i == 7 { 500.0 } else { 1.0 }),
                query: format!("select {i}"),
                context: Some(sqlcommenter::TraceContext::new(tp)),
                ..Statement::default()
            };
            agg.add(&st);
        }
        assert!(agg.traces.len() <= MAX_TRACES && agg.trace_steps <= MAX_ALL_STEPS);
        assert_eq!(agg.trace_steps, agg.traces.values().map(|t| t.steps.len()).sum::<usize>());
        let top = agg.slowest_traces(1);
        assert_eq!((top[0].db_ms, top[0].steps[0].query.as_str()), (500.0, "select 7"));
    }

    #[test]
    fn histogram_quantiles_within_bucket_width() {
        let mut h = Histogram::default();
        for i in 1..=1000 {
            h.record(i as f64);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p95 = h.quantile(0.95).unwrap();
        assert!((p50 / 500.0 - 1.0).abs() < 0.03, "{p50}");
        assert!((p95 / 950.0 - 1.0).abs() < 0.03, "{p95}");
        assert!(Histogram::default().quantile(0.5).is_none());
    }
}
