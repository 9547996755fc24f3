use super::*;

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn all() -> Filter {
    Filter::new(&[], &[]).unwrap()
}

fn points(c: &Converted) -> Vec<(&str, f64)> {
    let mut p: Vec<(&str, f64)> = c
        .points
        .iter()
        .map(|p| (p.metric.as_str(), p.value))
        .collect();
    p.sort_by(|a, b| a.0.cmp(b.0));
    p
}

const COUNTER: &str = "# TYPE req_total counter\nreq_total{code=\"200\",method=\"GET\"} 100\n";

#[test]
fn a_counter_becomes_its_rate_from_the_second_scrape_and_a_reset_counts_from_zero() {
    let mut c = Converter::new(all(), 100, 0.99);
    let first = c.convert(&parse(COUNTER), 0);
    assert!(first.points.is_empty(), "no rate from one reading");
    let second = c.convert(&parse(&COUNTER.replace("100", "130")), 10_000);
    assert_eq!(
        points(&second),
        [("req_total:rate{code=\"200\",method=\"GET\"}", 3.0)]
    );
    // The service restarted: its counter starts again from 0.
    let reset = c.convert(&parse(&COUNTER.replace("100", "20")), 20_000);
    assert_eq!(points(&reset)[0].1, 2.0);
}

#[test]
fn gauges_and_untyped_stay_as_they_are_with_labels_sorted() {
    let text = "# TYPE temp gauge\ntemp{zone=\"b\",area=\"a\"} 21.5\nplain 3\nnan_one NaN\n";
    let mut c = Converter::new(all(), 100, 0.99);
    let got = c.convert(&parse(text), 0);
    assert_eq!(
        points(&got),
        [("plain", 3.0), ("temp{area=\"a\",zone=\"b\"}", 21.5)]
    );
}

fn histogram(b1: u32, b2: u32, inf: u32) -> String {
    format!(
        "# TYPE lat histogram\nlat_bucket{{route=\"/\",le=\"0.1\"}} {b1}\nlat_bucket{{route=\"/\",le=\"1\"}} {b2}\nlat_bucket{{route=\"/\",le=\"+Inf\"}} {inf}\nlat_sum{{route=\"/\"}} 9\nlat_count{{route=\"/\"}} {inf}\n"
    )
}

#[test]
fn a_histogram_becomes_the_quantile_of_the_interval_and_the_rate_of_its_observations() {
    let mut c = Converter::new(all(), 100, 0.5);
    assert!(c
        .convert(&parse(&histogram(10, 10, 10)), 0)
        .points
        .is_empty());
    // In 2 s: 10 observations, 5 under 0.1 s and 5 between 0.1 and 1 s.
    let got = c.convert(&parse(&histogram(15, 20, 20)), 2_000);
    let p = points(&got);
    assert_eq!(p[0], ("lat:p50{route=\"/\"}", 0.1), "{p:?}");
    assert_eq!(p[1], ("lat_count:rate{route=\"/\"}", 5.0), "{p:?}");
    assert_eq!(
        p.len(),
        2,
        "_sum and _count are not series of their own: {p:?}"
    );
    // Now 9 of 10 are slow: the median is interpolated within 0.1..1.
    let got = c.convert(&parse(&histogram(16, 30, 30)), 4_000);
    let median = points(&got)[0].1;
    assert!((median - (0.1 + 0.9 * 4.0 / 9.0)).abs() < 1e-9, "{median}");
    // Nothing observed: no quantile, a rate of 0.
    let got = c.convert(&parse(&histogram(16, 30, 30)), 6_000);
    assert_eq!(points(&got), [("lat_count:rate{route=\"/\"}", 0.0)]);
}

#[test]
fn the_quantile_follows_histogram_quantile() {
    let b = [(0.1, 5.0), (1.0, 10.0), (f64::INFINITY, 10.0)];
    assert_eq!(quantile(0.5, &b), Some(0.1));
    assert_eq!(quantile(0.25, &b), Some(0.05));
    // Beyond the last finite bucket: its bound.
    let tail = [(0.1, 1.0), (f64::INFINITY, 10.0)];
    assert_eq!(quantile(0.99, &tail), Some(0.1));
    assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
    assert_eq!(quantile(0.5, &[(1.0, 3.0)]), None, "no +Inf bucket");
    assert_eq!(percent(0.99), "99");
    assert_eq!(percent(0.999), "99.9");
}

#[test]
fn a_summary_gives_its_nearest_quantile_and_the_rate_of_its_count() {
    let text = |n: u32| {
        format!("# TYPE rpc summary\nrpc{{quantile=\"0.5\"}} 0.2\nrpc{{quantile=\"0.9\"}} 0.7\nrpc_sum 5\nrpc_count {n}\n")
    };
    let mut c = Converter::new(all(), 100, 0.99);
    let first = c.convert(&parse(&text(10)), 0);
    assert_eq!(points(&first), [("rpc:p99", 0.7)]);
    let second = c.convert(&parse(&text(30)), 4_000);
    assert_eq!(points(&second), [("rpc:p99", 0.7), ("rpc_count:rate", 5.0)]);
}

#[test]
fn series_past_the_cap_are_counted_and_the_admitted_ones_stay_admitted() {
    let text = |names: &[&str]| names.iter().map(|n| format!("{n} 1\n")).collect::<String>();
    let mut c = Converter::new(all(), 2, 0.99);
    let got = c.convert(&parse(&text(&["a", "b", "c"])), 0);
    assert_eq!((got.points.len(), got.over_cap), (2, 1));
    let kept: Vec<&str> = got.points.iter().map(|p| p.metric.as_str()).collect();
    // The same two again, whatever order they come in.
    let again = c.convert(&parse(&text(&["c", "b", "a"])), 1_000);
    let mut again: Vec<&str> = again.points.iter().map(|p| p.metric.as_str()).collect();
    again.sort();
    let mut kept = kept;
    kept.sort();
    assert_eq!(again, kept);
    // One goes away: its place is free for the next scrape's newcomer.
    let gone = c.convert(&parse(&text(&[kept[0], "c"])), 2_000);
    assert_eq!(gone.over_cap, 1, "room is made after the scrape");
    let next = c.convert(&parse(&text(&[kept[0], "c"])), 3_000);
    assert_eq!((next.points.len(), next.over_cap), (2, 0));
}

#[test]
fn include_and_exclude_are_anchored_and_long_names_are_refused() {
    let f = Filter::new(&["node_cpu.*".into(), "up".into()], &[".*_guest_.*".into()]).unwrap();
    assert!(f.keeps("node_cpu_seconds_total"));
    assert!(f.keeps("up"));
    assert!(!f.keeps("xup"), "anchored");
    assert!(!f.keeps("node_cpu_guest_seconds_total"));
    assert!(!f.keeps("node_memory_free"));
    assert!(Filter::new(&["(".into()], &[]).is_err());
    let long = format!("x{{l=\"{}\"}} 1\n", "v".repeat(300));
    let mut c = Converter::new(all(), 10, 0.99);
    let got = c.convert(&parse(&long), 0);
    assert_eq!((got.points.len(), got.too_long), (0, 1));
}

#[test]
fn node_exporter_text_converts() {
    // A slice of what prometheus-node-exporter 1.5 serves.
    let text = r##"# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 1000.5
node_cpu_seconds_total{cpu="0",mode="user"} 20.25
# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes.
# TYPE node_memory_MemAvailable_bytes gauge
node_memory_MemAvailable_bytes 1.2e+10
# HELP node_uname_info Labeled system information as provided by the uname system call.
# TYPE node_uname_info gauge
node_uname_info{domainname="(none)",machine="x86_64",nodename="vm",release="6.1",sysname="Linux",version="#1 SMP PREEMPT_DYNAMIC @0"} 1
"##;
    let mut c = Converter::new(all(), 100, 0.99);
    assert_eq!(c.convert(&parse(text), 0).points.len(), 2, "two gauges");
    let later = text.replace("1000.5", "1001.5").replace("20.25", "20.75");
    let got = c.convert(&parse(&later), 1_000);
    let p = points(&got);
    assert_eq!(
        p[0],
        ("node_cpu_seconds_total:rate{cpu=\"0\",mode=\"idle\"}", 1.0)
    );
    assert_eq!(
        p[1],
        ("node_cpu_seconds_total:rate{cpu=\"0\",mode=\"user\"}", 0.5)
    );
    assert_eq!(p[2].0, "node_memory_MemAvailable_bytes");
}
