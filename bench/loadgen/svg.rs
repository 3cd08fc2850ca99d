//! A hand-written SVG percentile plot: for each phase, latency (log scale) against percentile on
//! the usual HdrHistogram axis, where 90%, 99%, 99.9%... are evenly spaced (x = log10(1/(1-q))).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const W: f64 = 1000.0;
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 64.0;
const BOTTOM: f64 = 60.0;
/// Rightmost percentile shown: 99.999%.
const MAX_NINES: f64 = 5.0;
const COLORS: [&str; 9] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the plot; `series` are (phase name, histogram in microseconds); empty ones are skipped.
/// `subtitle` (the workload) goes on a second, smaller line.
pub fn plot(title: &str, subtitle: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    let series: Vec<_> = series.iter().filter(|(_, h)| !h.is_empty()).collect();
    let lo = series
        .iter()
        .map(|(_, h)| h.min().max(1))
        .min()
        .unwrap_or(1);
    let hi = series
        .iter()
        .map(|(_, h)| h.max().max(1))
        .max()
        .unwrap_or(10);
    let y0 = (lo as f64).log10().floor();
    let y1 = ((hi as f64).log10().ceil()).max(y0 + 1.0);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x_of = |nines: f64| LEFT + nines / MAX_NINES * pw;
    let y_of = |us: f64| TOP + ph - (us.max(1.0).log10() - y0) / (y1 - y0) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="42" text-anchor="middle" font-size="11" fill="#333">{}</text>"##,
        W / 2.0,
        esc(subtitle)
    );
    // Grid and axes.
    for d in (y0 as i32)..=(y1 as i32) {
        let y = y_of(10f64.powi(d));
        let label = match d {
            d if d < 3 => format!("{} µs", 10u64.pow(d as u32)),
            d if d < 6 => format!("{} ms", 10u64.pow(d as u32 - 3)),
            d => format!("{} s", 10u64.pow(d as u32 - 6)),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let ticks = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    for (i, t) in ticks.iter().enumerate() {
        let x = x_of(i as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{t}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        H - 16.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">latency</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    // One line per phase.
    for (i, (name, h)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts = String::new();
        let steps = 250;
        // With n samples the highest percentile with meaning is 1 - 1/n.
        let top_nines = (h.len() as f64).log10().min(MAX_NINES);
        for k in 0..=steps {
            let nines = top_nines * k as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-nines);
            let v = if k == steps {
                h.max()
            } else {
                h.value_at_quantile(q)
            };
            let _ = write!(pts, "{:.1},{:.1} ", x_of(nines), y_of(v as f64));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
            pts.trim_end()
        );
        let ly = TOP + 14.0 + i as f64 * 20.0;
        let lx = LEFT + pw + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{} (p99 {})</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            esc(name),
            human(h.value_at_quantile(0.99))
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Microseconds for people.
pub fn human(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1000..=999_999 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_well_formed_plot() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let empty = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        let svg = plot("t <x>", "w", &[("mail", &h), ("none", &empty)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("t &lt;x&gt;"));
        assert!(svg.contains("99.9%"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
