//! Log setup: text or JSON lines on stdout; `RUST_LOG` overrides the configured level.
//!
//! The per-session tcplog line ([`session`]) has a writer of its own. It is the one log line on
//! the data path, once per session: at 12k short sessions/s, formatting it through tracing's
//! generic event machinery (field visitors, a formatted timestamp, escaping character by
//! character) cost 5 % of the proxy's CPU. It is written here in exactly the layout of the
//! tracing lines around it (a test holds the two equal), honouring the same filter, with
//! one write per line, like HAProxy's log line.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::session::{civil_from_days, SessionRecord};

/// Target of the session lines, for `RUST_LOG` filters.
pub const SESSION_TARGET: &str = "tor_proxy::session";

/// Set once our subscriber is the global one: the session writer then knows the layout.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    if tracing::subscriber::set_global_default(subscriber(format, filter, std::io::stdout)).is_ok()
    {
        let _ = FORMAT.set(format);
    }
}

/// The subscriber `init` installs, writing to `writer`.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(builder.json().flatten_event(false).finish()),
        LogFormat::Text => Box::new(builder.with_ansi(false).finish()),
    }
}

/// Logs one ended session: the tcplog line, with the switch, backend and termination code
/// repeated as fields for log queries.
pub fn session(rec: &SessionRecord) {
    let Some(&format) = FORMAT.get() else {
        // Another subscriber (tests, an embedding program): the generic path.
        return through_tracing(rec);
    };
    if !tracing::enabled!(target: SESSION_TARGET, tracing::Level::INFO) {
        return;
    }
    thread_local! {
        static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    }
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return;
        };
        line.clear();
        session_line(format, rec, SystemTime::now(), &mut line);
        let _ = std::io::stdout().lock().write_all(&line);
    });
}

/// The session line as a tracing event: the generic path, and the reference that the direct
/// writer's layout is tested against.
fn through_tracing(rec: &SessionRecord) {
    tracing::info!(
        target: SESSION_TARGET,
        switch = %rec.switch,
        backend = rec.backend.unwrap_or("<NOSRV>"),
        termination = %rec.termination,
        "{}",
        rec.tcplog()
    );
}

/// The session line as the subscriber would write it, at `now`.
fn session_line(format: LogFormat, rec: &SessionRecord, now: SystemTime, out: &mut Vec<u8>) {
    // The switch may be named by its certificate: no control character reaches the log.
    let switch = printable(rec.switch);
    let rec = SessionRecord {
        switch: &switch,
        ..rec.clone()
    };
    let backend = rec.backend.unwrap_or("<NOSRV>");
    match format {
        LogFormat::Text => {
            write_timestamp(now, out);
            let _ = writeln!(
                out,
                "  INFO {} switch={} backend={:?} termination={}",
                rec.tcplog(),
                rec.switch,
                backend,
                rec.termination
            );
        }
        LogFormat::Json => {
            #[derive(Serialize)]
            struct Line<'a> {
                timestamp: &'a str,
                level: &'static str,
                fields: Fields<'a>,
            }
            #[derive(Serialize)]
            struct Fields<'a> {
                message: &'a str,
                switch: &'a str,
                backend: &'a str,
                termination: &'a str,
            }
            let mut timestamp = Vec::with_capacity(32);
            write_timestamp(now, &mut timestamp);
            let message = rec.tcplog().to_string();
            let termination = rec.termination.to_string();
            let line = Line {
                timestamp: std::str::from_utf8(&timestamp).unwrap_or_default(),
                level: "INFO",
                fields: Fields {
                    message: &message,
                    switch: rec.switch,
                    backend,
                    termination: &termination,
                },
            };
            if serde_json::to_writer(&mut *out, &line).is_ok() {
                out.push(b'\n');
            }
        }
    }
}

/// `2026-11-22T08:27:04.069850Z`: RFC 3339 in UTC with microseconds, as tracing writes it.
fn write_timestamp(now: SystemTime, out: &mut Vec<u8>) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since.subsec_micros()
    );
}

/// `s` with control characters (C0, DEL, C1) escaped.
fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::session::Termination;

    fn record<'a>(switch: &'a str, backend: Option<&'a str>) -> SessionRecord<'a> {
        SessionRecord {
            client: "10.0.1.2:33313".parse().unwrap(),
            accept_unix_ms: 1_233_922_371_443,
            listener: "ovsdb",
            backend,
            tw_ms: 3,
            tc_ms: -1,
            tt_ms: 5007,
            bytes_up: 17,
            bytes_down: 212,
            termination: Termination('S', 'C'),
            active_conns: 3,
            backend_conns: 1,
            retries: 2,
            switch,
        }
    }

    /// What the subscriber `init` installs writes for the same session, through tracing.
    fn theirs(format: LogFormat, rec: &SessionRecord) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let make = move || Sink(sink.clone());
        let sub = subscriber(format, EnvFilter::new("info"), make);
        tracing::subscriber::with_default(sub, || through_tracing(rec));
        let bytes = out.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn ours(format: LogFormat, rec: &SessionRecord, now: SystemTime) -> String {
        let mut out = Vec::new();
        session_line(format, rec, now, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The text line equals tracing's but for the timestamp (taken at a different instant).
    #[test]
    fn text_line_has_the_subscribers_layout() {
        for rec in [record("tor-7", Some("agent-a")), record("10.0.1.2", None)] {
            let theirs = theirs(LogFormat::Text, &rec);
            let mine = ours(LogFormat::Text, &rec, SystemTime::now());
            let (ts_theirs, rest_theirs) = theirs.split_once(' ').unwrap();
            let (ts_mine, rest_mine) = mine.split_once(' ').unwrap();
            assert_eq!(rest_mine, rest_theirs);
            assert_eq!(ts_mine.len(), ts_theirs.len(), "{ts_mine} vs {ts_theirs}");
        }
    }

    #[test]
    fn json_line_has_the_subscribers_layout() {
        let rec = record("tor-7", Some("agent-a"));
        let parse = |s: &str| -> serde_json::Value { serde_json::from_str(s.trim_end()).unwrap() };
        let mut theirs = parse(&theirs(LogFormat::Json, &rec));
        let mut mine = parse(&ours(LogFormat::Json, &rec, SystemTime::now()));
        let ts = |v: &mut serde_json::Value| v.as_object_mut().unwrap().remove("timestamp");
        let (t1, t2) = (ts(&mut theirs).unwrap(), ts(&mut mine).unwrap());
        assert_eq!(mine, theirs);
        assert_eq!(t1.as_str().unwrap().len(), t2.as_str().unwrap().len());
        // Same key order as tracing's, for people reading raw lines.
        let mine_raw = ours(LogFormat::Json, &rec, SystemTime::now());
        assert!(mine_raw.starts_with("{\"timestamp\":\""), "{mine_raw}");
        assert!(mine_raw.ends_with("}}\n"));
    }

    #[test]
    fn timestamp_is_rfc3339_utc_micros() {
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_233_922_371_443_007);
        let mut out = Vec::new();
        write_timestamp(at, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2009-02-06T12:12:51.443007Z"
        );
    }

    /// A certificate-named switch cannot inject terminal escapes or forge lines.
    #[test]
    fn control_characters_in_the_switch_name_are_escaped() {
        let rec = record("evil\u{1b}[2J\nfake line\u{85}", Some("a1"));
        let line = ours(LogFormat::Text, &rec, SystemTime::now());
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\n'),
            "{line:?}"
        );
        assert!(line.contains("switch=evil\\u{1b}[2J\\nfake line\\u{85}"));
    }
}
