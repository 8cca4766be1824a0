//! Workloads as data: one TOML file per workload under `bench-harness/workloads/`.
//!
//! ```toml
//! name = "50x1-100B"
//! kind = "append"           # or "groups-consume" or "ping" (below)
//! connections = 50          # client connections
//! pipeline = 1              # closed loop: requests in flight per connection
//! rate = 0                  # > 0: open loop at this many requests/s in total (pipeline is
//!                           #      then only a cap on what one connection may have waiting)
//! events_per_request = 1
//! payload_bytes = 100
//! streams = 1000
//! distribution = "uniform"  # or "zipf" (s = 0.99)
//! expected_version = false  # evring: append with the stream's expected version
//! read_fraction = 0.0       # share of requests that read the 10 newest events of a stream
//! duration = "5s"
//! warmup = "1s"
//! count = 10                # groups-consume: COUNT of each XREADGROUP
//! prefill = 0               # groups-consume: entries written before the run
//! ```
//!
//! `kind = "groups-consume"` (RESP targets only, `consume.rs`): the `streams` streams are
//! pre-filled with `prefill` entries of `payload_bytes`, one consumer group `g` is created on
//! each, and each of the `connections` consumers `c<i>` loops `XREADGROUP GROUP g c<i> COUNT
//! <count> STREAMS s<i % streams> >` then `XACK` of the IDs it got; an event is an entry
//! consumed and acknowledged, a request one read + ack round. `pipeline` must be 1 (the ack
//! needs the read's reply).
//!
//! `kind = "ping"`: every request is a PING, nothing is written — the network path alone, the
//! same driver (`driver.rs`) and the same closed or open loop as the appends. evring gets its
//! protocol's PING frame (answered 0x82), the RESP targets `*1\r\n$4\r\nPING\r\n` (answered
//! `+PONG\r\n`), and the `floor` targets (`floor.rs`) the same. A PING counts as one event, so
//! events/s = requests/s; the stream, payload and event keys are ignored, and
//! `read_fraction` and `expected_version` are refused.
//!
//! Every key but `name` has the default shown. Unknown keys are an error (a typo must not
//! silently run another workload).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::report;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    pub name: String,
    pub kind: String,
    pub connections: usize,
    pub pipeline: usize,
    pub rate: f64,
    pub events_per_request: usize,
    pub payload_bytes: usize,
    pub streams: usize,
    pub distribution: String,
    pub expected_version: bool,
    pub read_fraction: f64,
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    #[serde(deserialize_with = "duration")]
    pub warmup: Duration,
    pub count: usize,
    pub prefill: u64,
}

/// `kind` of a consume-and-ack workload.
pub const GROUPS_CONSUME: &str = "groups-consume";
/// `kind` of a workload of PINGs.
pub const PING: &str = "ping";

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: String::new(),
            kind: "append".into(),
            connections: 50,
            pipeline: 1,
            rate: 0.0,
            events_per_request: 1,
            payload_bytes: 100,
            streams: 1000,
            distribution: "uniform".into(),
            expected_version: false,
            read_fraction: 0.0,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            count: 10,
            prefill: 0,
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    report::parse_duration(&text).map_err(serde::de::Error::custom)
}

impl Workload {
    pub fn parse(text: &str) -> anyhow::Result<Workload> {
        let w: Workload = toml::from_str(text)?;
        w.validate()?;
        Ok(w)
    }

    pub fn load(path: &Path) -> anyhow::Result<Workload> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read workload {}", path.display()))?;
        let mut w =
            Workload::parse(&text).with_context(|| format!("workload {}", path.display()))?;
        if w.name.is_empty() {
            w.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(w)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.connections == 0 || self.pipeline == 0 {
            bail!("connections and pipeline must be at least 1");
        }
        if self.events_per_request == 0 || self.streams == 0 {
            bail!("events_per_request and streams must be at least 1");
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            bail!("rate must be a non-negative number of requests per second");
        }
        if !(0.0..=1.0).contains(&self.read_fraction) {
            bail!("read_fraction must be within 0..=1");
        }
        if !["uniform", "zipf"].contains(&self.distribution.as_str()) {
            bail!(
                "distribution {:?}: use \"uniform\" or \"zipf\"",
                self.distribution
            );
        }
        if self.expected_version && self.streams < self.connections {
            bail!("expected_version needs at least one stream per connection (each connection owns its streams)");
        }
        if self.duration.is_zero() {
            bail!("duration must be > 0");
        }
        match self.kind.as_str() {
            "append" => {}
            GROUPS_CONSUME => {
                if self.pipeline != 1 || self.open_loop() {
                    bail!("groups-consume is a closed loop of read + ack rounds: pipeline = 1, no rate");
                }
                if self.count == 0 || self.prefill == 0 {
                    bail!("groups-consume needs count and prefill of at least 1");
                }
                if self.read_fraction > 0.0 || self.expected_version {
                    bail!("groups-consume takes no read_fraction or expected_version");
                }
            }
            PING => {
                if self.read_fraction > 0.0 || self.expected_version {
                    bail!("ping takes no read_fraction or expected_version");
                }
            }
            other => bail!("kind {other:?}: use \"append\", \"groups-consume\" or \"ping\""),
        }
        Ok(())
    }

    /// A consume-and-ack workload (`consume.rs`), not appends.
    pub fn consume(&self) -> bool {
        self.kind == GROUPS_CONSUME
    }

    /// A workload of PINGs, nothing written.
    pub fn ping(&self) -> bool {
        self.kind == PING
    }

    /// Open loop (fixed arrival rate) or closed loop (fixed in-flight count).
    pub fn open_loop(&self) -> bool {
        self.rate > 0.0
    }

    pub fn describe(&self) -> String {
        if self.consume() {
            return format!(
                "{}: {} consumers in one group, XREADGROUP COUNT {} + XACK, {} entries x {} B pre-filled over {} stream(s)",
                self.name,
                self.connections,
                self.count,
                self.prefill,
                self.payload_bytes,
                self.streams
            );
        }
        let mode = if self.open_loop() {
            format!("open loop {:.0} req/s", self.rate)
        } else {
            format!("{}c x {}p", self.connections, self.pipeline)
        };
        if self.ping() {
            return format!("{}: {mode}, PING", self.name);
        }
        format!(
            "{}: {mode}, {} ev x {} B, {} {} streams{}{}",
            self.name,
            self.events_per_request,
            self.payload_bytes,
            self.streams,
            self.distribution,
            if self.expected_version {
                ", expected versions"
            } else {
                ""
            },
            if self.read_fraction > 0.0 {
                format!(", {:.0}% reads", self.read_fraction * 100.0)
            } else {
                String::new()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let w = Workload::parse("name = \"x\"\nconnections = 8\npayload_bytes = 1000\n").unwrap();
        assert_eq!(w.connections, 8);
        assert_eq!(w.payload_bytes, 1000);
        assert_eq!(w.pipeline, 1);
        assert_eq!(w.duration, Duration::from_secs(5));
        assert!(!w.open_loop());
    }

    #[test]
    fn durations_rates_and_modes_parse() {
        let w = Workload::parse(
            "rate = 20000\nduration = \"250ms\"\nwarmup = \"0s\"\ndistribution = \"zipf\"\n\
             read_fraction = 0.25\n",
        )
        .unwrap();
        assert!(w.open_loop());
        assert_eq!(w.duration, Duration::from_millis(250));
        assert_eq!(w.warmup, Duration::ZERO);
        assert!(w.describe().contains("open loop 20000 req/s"));
        assert!(w.describe().contains("25% reads"));
    }

    #[test]
    fn mistakes_are_errors_naming_the_key() {
        let e = Workload::parse("conections = 5\n").unwrap_err().to_string();
        assert!(e.contains("conections"), "{e}");
        let e = Workload::parse("distribution = \"pareto\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pareto"), "{e}");
        assert!(Workload::parse("read_fraction = 1.5\n").is_err());
        assert!(Workload::parse("pipeline = 0\n").is_err());
        assert!(Workload::parse("duration = \"soon\"\n").is_err());
        assert!(Workload::parse("expected_version = true\nstreams = 2\n").is_err());
        assert!(Workload::parse("kind = \"consume\"\n").is_err());
        assert!(
            Workload::parse("kind = \"groups-consume\"\n").is_err(),
            "no prefill"
        );
        assert!(Workload::parse("kind = \"groups-consume\"\nprefill = 9\npipeline = 2\n").is_err());
        let w = Workload::parse("kind = \"groups-consume\"\nprefill = 9\n").unwrap();
        assert!(w.consume());
        assert_eq!(w.count, 10);
        let w = Workload::parse("name = \"p\"\nkind = \"ping\"\npipeline = 16\n").unwrap();
        assert!(w.ping() && !w.consume());
        assert_eq!(w.describe(), "p: 50c x 16p, PING");
        assert!(Workload::parse("kind = \"ping\"\nread_fraction = 0.5\n").is_err());
    }

    #[test]
    fn the_shipped_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                Workload::load(&path).unwrap();
                n += 1;
            }
        }
        assert!(n >= 4);
    }
}
