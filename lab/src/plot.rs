//! SVG plots of benchmark rows (plotters, SVG backend only).

use crate::measure::Row;
use anyhow::Result;
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// One line: label and (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// Draws a line chart; `log_x` puts x on a log scale.
pub fn line_chart(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    log_x: bool,
) -> Result<()> {
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut xmin, mut xmax, mut ymax) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in pts {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymax = ymax.max(y);
    }
    if xmin > xmax {
        (xmin, xmax) = (1.0, 10.0);
    }
    if xmin == xmax {
        xmax = xmin * 2.0 + 1.0;
    }
    let ymax = if ymax <= 0.0 { 1.0 } else { ymax * 1.1 };
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(xlabel)
                .y_desc(ylabel)
                .draw()?;
            for (i, (label, points)) in series.iter().enumerate() {
                let c = COLORS[i % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                    .label(label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }};
    }
    if log_x {
        draw!(builder.build_cartesian_2d((xmin * 0.8..xmax * 1.25).log_scale(), 0.0..ymax)?);
    } else {
        draw!(builder.build_cartesian_2d(xmin..xmax, 0.0..ymax)?);
    }
    root.present()?;
    Ok(())
}

/// One line per mode, switch and address family; labelled by mode, with
/// the switch and the family when the run had more than one of them.
fn series(
    rows: &[Row],
    exp: &str,
    proto: &str,
    x: fn(&Row) -> f64,
    y: fn(&Row) -> f64,
) -> Vec<Series> {
    let key = |r: &'_ Row| (r.mode.clone(), r.switch.clone(), r.family.clone());
    let mut lines: Vec<(String, String, String)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.experiment == exp && r.proto == proto)
    {
        if !lines.contains(&key(r)) {
            lines.push(key(r));
        }
    }
    let one_switch = rows.iter().all(|r| r.switch == rows[0].switch);
    let one_family = rows.iter().all(|r| r.family == rows[0].family);
    lines
        .into_iter()
        .map(|line| {
            let mut pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| {
                    r.experiment == exp && r.proto == proto && key(r) == line && r.requests > 0
                })
                .map(|r| (x(r), y(r)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (m, sw, family) = line;
            let mut label = m;
            if !one_family {
                label = format!("{label} {family}");
            }
            if !one_switch {
                label = format!("{label} ({sw})");
            }
            (label, pts)
        })
        .collect()
}

/// Writes every plot for a benchmark; returns the file names.
pub fn all(dir: &Path, rows: &[Row]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    type Getter = fn(&Row) -> f64;
    let metrics: [(&str, &str, Getter); 3] = [
        ("rps", "requests/s", |r| r.rps),
        ("p99", "p99 latency (µs)", |r| r.p99_us),
        ("cpu", "host CPU per request (µs)", |r| r.cpu_us_per_req),
    ];
    for (exp, xl, xf, log) in [
        (
            "services",
            "Services",
            (|r: &Row| r.services as f64) as Getter,
            true,
        ),
        (
            "concurrency",
            "concurrency",
            (|r: &Row| r.concurrency as f64) as Getter,
            false,
        ),
    ] {
        for (proto, short, what) in [
            ("HttpShort", "short", "short connections"),
            ("HttpLong", "long", "long connections"),
            ("Udp", "udp", "UDP echo"),
        ] {
            for (m, yl, yf) in metrics {
                let s = series(rows, exp, proto, xf, yf);
                // A sweep of one point (a run that fixes that axis) has
                // nothing to draw.
                if s.iter().all(|(_, pts)| pts.len() < 2) {
                    continue;
                }
                let name = format!("{m}_vs_{exp}_{short}.svg");
                let title = format!("{yl} vs {xl}, {what}");
                line_chart(&dir.join(&name), &title, xl, yl, &s, log)?;
                out.push(name);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_svg() {
        let dir = std::env::temp_dir().join(format!("talaria-lab-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let row = |mode: &str, switch: &str, services: u32, concurrency: u32| Row {
            experiment: if concurrency == 10 {
                "services"
            } else {
                "concurrency"
            }
            .into(),
            mode: mode.into(),
            switch: switch.into(),
            proto: "HttpShort".into(),
            family: "ipv4".into(),
            services,
            concurrency,
            requests: 1,
            rps: 1000.0 / (1.0 + services as f64 / 1000.0),
            ..Default::default()
        };
        let mut rows: Vec<Row> = [10, 1000, 10000]
            .iter()
            .flat_map(|&s| ["direct", "iptables"].map(|m| row(m, "switch-agent", s, 10)))
            .collect();
        // A concurrency "sweep" of one point draws nothing.
        rows.push(row("direct", "switch-agent", 100, 1));
        let files = all(&dir, &rows).unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files.iter().all(|f| f.ends_with("_vs_services_short.svg")));
        let svg = std::fs::read_to_string(dir.join(&files[0])).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("iptables"));
        assert!(!svg.contains("switch-agent"), "one switch: lines by mode");
        // Two switches: one line per mode and switch, labelled with both.
        rows.extend([10, 1000].map(|s| row("direct", "bmv2", s, 10)));
        let files = all(&dir, &rows).unwrap();
        let svg = std::fs::read_to_string(dir.join(&files[0])).unwrap();
        assert!(svg.contains("direct (bmv2)") && svg.contains("iptables (switch-agent)"));
        // Two families: their lines apart, labelled with the family.
        rows.extend([10, 1000].map(|s| Row {
            family: "ipv6".into(),
            ..row("direct", "bmv2", s, 10)
        }));
        let files = all(&dir, &rows).unwrap();
        let svg = std::fs::read_to_string(dir.join(&files[0])).unwrap();
        assert!(svg.contains("direct ipv6 (bmv2)") && svg.contains("direct ipv4 (bmv2)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
