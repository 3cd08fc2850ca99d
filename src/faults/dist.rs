//! Delay distributions for fault rules, written `fixed:100ms`, `uniform:10ms..200ms`,
//! `exp:50ms` (mean), `lognormal:50ms,0.5` (median, sigma) or `dice:1s,70` (smtp-sink's
//! `-W cmd:delay:odds`), and their draws from a shard's generator (capped at an hour).

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A delay distribution (see the module documentation for the syntax).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Dist {
    /// Always this long.
    Fixed(Duration),
    /// Uniform between the two.
    Uniform(Duration, Duration),
    /// Exponential with this mean.
    Exp(Duration),
    /// Log-normal with this median and sigma.
    LogNormal(Duration, f64),
    /// smtp-sink's `-W cmd:delay:odds`: `delay` times the number of 0..99 dice rolls before
    /// one is at least `odds`.
    Dice(Duration, u32),
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s or m)")),
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range (0 to 1 hour)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn show(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl TryFrom<String> for Dist {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let (kind, arg) = s.split_once(':').unwrap_or(("fixed", &s));
        Ok(match kind {
            "fixed" => Dist::Fixed(parse_duration(arg)?),
            "uniform" => {
                let (a, b) = arg
                    .split_once("..")
                    .ok_or_else(|| format!("uniform needs LOW..HIGH: {s:?}"))?;
                let (a, b) = (parse_duration(a)?, parse_duration(b)?);
                if a > b {
                    return Err(format!("uniform: {s:?} has LOW above HIGH"));
                }
                Dist::Uniform(a, b)
            }
            "exp" => Dist::Exp(parse_duration(arg)?),
            "lognormal" => {
                let (m, sigma) = arg
                    .split_once(',')
                    .ok_or_else(|| format!("lognormal needs MEDIAN,SIGMA: {s:?}"))?;
                let sigma: f64 = sigma
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad sigma in {s:?}"))?;
                if !(0.0..=5.0).contains(&sigma) {
                    return Err(format!("lognormal sigma out of range (0 to 5): {s:?}"));
                }
                Dist::LogNormal(parse_duration(m)?, sigma)
            }
            "dice" => {
                let (d, odds) = arg
                    .split_once(',')
                    .ok_or_else(|| format!("dice needs DELAY,ODDS: {s:?}"))?;
                let odds: u32 = odds
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad odds in {s:?}"))?;
                if !(1..=99).contains(&odds) {
                    return Err(format!("dice odds must be 1 to 99: {s:?}"));
                }
                Dist::Dice(parse_duration(d)?, odds)
            }
            _ => {
                return Err(format!(
                    "unknown distribution {kind:?} (fixed, uniform, exp, lognormal, dice)"
                ))
            }
        })
    }
}

impl From<Dist> for String {
    fn from(d: Dist) -> String {
        match d {
            Dist::Fixed(a) => format!("fixed:{}", show(a)),
            Dist::Uniform(a, b) => format!("uniform:{}..{}", show(a), show(b)),
            Dist::Exp(a) => format!("exp:{}", show(a)),
            Dist::LogNormal(a, s) => format!("lognormal:{},{s}", show(a)),
            Dist::Dice(a, o) => format!("dice:{},{o}", show(a)),
        }
    }
}

impl Dist {
    /// One draw (capped at an hour).
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        let secs = match *self {
            Dist::Fixed(d) => d.as_secs_f64(),
            Dist::Uniform(a, b) => rng.random_range(a.as_secs_f64()..=b.as_secs_f64()),
            Dist::Exp(mean) => -mean.as_secs_f64() * (1.0 - rng.random::<f64>()).ln(),
            Dist::LogNormal(median, sigma) => {
                // Box-Muller: one standard normal draw.
                let (u1, u2) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                median.as_secs_f64() * (sigma * z).exp()
            }
            Dist::Dice(d, odds) => {
                let mut n = 0u32;
                while rng.random_range(0..100u32) < odds && n < 1000 {
                    n += 1;
                }
                d.as_secs_f64() * f64::from(n)
            }
        };
        Duration::from_secs_f64(secs.clamp(0.0, 3600.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn draws_follow_their_distribution() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let d = Dist::try_from("exp:100ms".to_string()).unwrap();
        let n = 20_000;
        let mean: f64 = (0..n)
            .map(|_| d.sample(&mut rng).as_secs_f64())
            .sum::<f64>()
            / n as f64;
        assert!((mean - 0.1).abs() < 0.005, "{mean}");
        let u = Dist::try_from("uniform:10ms..20ms".to_string()).unwrap();
        assert!((0..1000).all(|_| {
            let v = u.sample(&mut rng);
            v >= Duration::from_millis(10) && v <= Duration::from_millis(20)
        }));
        let l = Dist::try_from("lognormal:50ms,0.5".to_string()).unwrap();
        let mut v: Vec<f64> = (0..n).map(|_| l.sample(&mut rng).as_secs_f64()).collect();
        v.sort_by(f64::total_cmp);
        assert!((v[n / 2] - 0.05).abs() < 0.003, "median {}", v[n / 2]);
    }
}
