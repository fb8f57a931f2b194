//! Route-stanza codec throughput: framing + decoding the two hot streams of a takeover, beside
//! a plain quick-xml event loop over the same bytes (the floor: tokenising only, no tree, no
//! values), and encoding them.
//!
//! * CN → agent: N route `message`s of 32 items each, as our CN writes them (§5.1).
//! * agent → CN: N `publish` + `collection` iq pairs, as the agent writes them (§4.2).
//!
//! Decoders compared on each stream, all fed in 64 KiB reads as from a socket:
//! * `quick-xml events (floor)`: `Reader::read_event` over the whole stream, nothing kept;
//! * `framer only`: cutting stanzas and checking UTF-8, no parsing;
//! * `framer + element tree + decode`: `Framer::next_frame` then `decode_cn_message` /
//!   `decode_agent_iq` (the generic path, what every stanza took before `fast`);
//! * `framer + fast decode`: `Framer::next_raw_frame` then `RouteDecoding::decode`.
//!
//! Run: `cargo bench -p tf-xmpp --bench codec` (env: `CODEC_MESSAGES`, default 10000;
//! `CODEC_PAIRS`, default 10000; `CODEC_RUNS`, default 5, the fastest run's thread CPU time is
//! reported, which keeps the figures usable on a busy shared machine;
//! `CODEC_ONLY=fast` runs only the decoders whose name contains that word, for profiling).

use quick_xml::events::Event;
use std::hint::black_box;
use tf_xmpp::enet::EnetEntry;
use tf_xmpp::route::{
    decode_agent_iq, decode_cn_message, encode_route_publish, encode_route_update_bodies,
    wrap_cn_event, AgentIq, CnMessage, MAX_ITEMS_PER_MESSAGE,
};
use tf_xmpp::{Element, Frame, Framer, RawFrame, RouteDecoding, RouteStanza, Stanza};

const VRF: &str = "default-domain:bench:blue:blue";
const AGENT: &str = "tor-agent-a";
const READ: usize = 64 * 1024;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn entry(i: usize) -> EnetEntry {
    let mac = format!(
        "02:bb:{:02x}:{:02x}:{:02x}:{:02x}",
        (i >> 24) & 0xff,
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    );
    let mut e = EnetEntry::tor_mac(5001, &mac, &format!("10.9.0.{}", 1 + i % 64), 1);
    e.virtual_network = "default-domain:bench:blue".into();
    e
}

/// CPU time of this thread, in seconds: unlike wall-clock time it does not count the time
/// other processes on this shared machine hold the core.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The fastest of `runs` runs of `f`, in thread CPU seconds; `f` returns a count that is
/// checked.
fn time(runs: usize, want: usize, mut f: impl FnMut() -> usize) -> f64 {
    (0..runs)
        .map(|_| {
            let t0 = thread_cpu();
            let n = f();
            let dt = thread_cpu() - t0;
            assert_eq!(n, want, "wrong count");
            dt
        })
        .fold(f64::INFINITY, f64::min)
}

/// Counts start tags with quick-xml (end names checked, as in `Element::parse`).
fn floor(stream: &str) -> usize {
    let mut r = quick_xml::Reader::from_str(stream);
    r.config_mut().check_end_names = true;
    let mut starts = 0;
    loop {
        match r.read_event() {
            Ok(Event::Start(_)) | Ok(Event::Empty(_)) => starts += 1,
            Ok(Event::Eof) => return starts,
            Ok(e) => {
                black_box(e);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Feeds the stream in socket-sized reads and hands every raw stanza to `each`.
fn frames(stream: &[u8], mut each: impl FnMut(tf_xmpp::RawStanza)) {
    let mut f = Framer::default();
    for chunk in stream.chunks(READ) {
        f.push(chunk);
        while let Some(fr) = f.next_raw_frame().expect("frame") {
            if let RawFrame::Stanza(s) = fr {
                each(s);
            }
        }
    }
}

fn tree_frames(stream: &[u8], mut each: impl FnMut(Stanza)) {
    let mut f = Framer::default();
    for chunk in stream.chunks(READ) {
        f.push(chunk);
        while let Some(fr) = f.next_frame().expect("frame") {
            if let Frame::Stanza(el) = fr {
                each(Stanza::from_element(el).expect("stanza"));
            }
        }
    }
}

fn cn_routes(m: &CnMessage) -> usize {
    match m {
        CnMessage::RouteUpdate { items, .. } => items.len(),
        other => panic!("{other:?}"),
    }
}

fn agent_routes(iq: &AgentIq) -> usize {
    match iq {
        AgentIq::Publish { entry: Some(_), .. } => 1,
        AgentIq::Collection { .. } => 0,
        other => panic!("{other:?}"),
    }
}

struct Row {
    stream: &'static str,
    decoder: &'static str,
    secs: f64,
    bytes: usize,
    stanzas: usize,
    routes: usize,
    floor: f64,
}

fn selected(decoder: &str) -> bool {
    std::env::var("CODEC_ONLY").map_or(true, |w| decoder.contains(w.as_str()))
}

fn print(r: &Row) {
    println!(
        "| {:<14} | {:<34} | {:>7.3} | {:>7.0} | {:>11.0} | {:>11.0} | {:>6.2}x |",
        r.stream,
        r.decoder,
        r.secs,
        r.bytes as f64 / r.secs / 1e6,
        r.stanzas as f64 / r.secs,
        r.routes as f64 / r.secs,
        r.secs / r.floor,
    );
}

fn main() {
    let messages = env("CODEC_MESSAGES", 10_000);
    let pairs = env("CODEC_PAIRS", 10_000);
    let runs = env("CODEC_RUNS", 5).max(1);

    // CN → agent: `messages` messages of 32 items (routes repeat every 100k).
    let bodies = encode_route_update_bodies(
        VRF,
        &(0..MAX_ITEMS_PER_MESSAGE * messages.min(3125))
            .map(entry)
            .collect::<Vec<_>>(),
    );
    let mut cn = String::new();
    for i in 0..messages {
        cn.push_str(&wrap_cn_event(AGENT, &bodies[i % bodies.len()]));
    }
    let cn_routes_total = messages * MAX_ITEMS_PER_MESSAGE;
    // Agent → CN: `pairs` publish + collection pairs.
    let mut ag = String::new();
    for i in 0..pairs {
        ag.push_str(&encode_route_publish(AGENT, VRF, &entry(i), true, i as u64));
    }

    println!(
        "# tf-xmpp codec: {messages} CN messages x {MAX_ITEMS_PER_MESSAGE} items ({:.1} MB), {pairs} agent publish+collection pairs ({:.1} MB), best of {runs} runs, thread CPU time\n",
        cn.len() as f64 / 1e6,
        ag.len() as f64 / 1e6
    );
    println!("| stream         | decoder                            | seconds |    MB/s |   stanzas/s |    routes/s | vs floor |");
    println!("|----------------|------------------------------------|--------:|--------:|------------:|------------:|---------:|");

    for (stream, text, stanzas, routes) in [
        ("CN → agent", &cn, messages, cn_routes_total),
        ("agent → CN", &ag, 2 * pairs, pairs),
    ] {
        let is_cn = stream.starts_with("CN");
        let starts = floor(text);
        let floor_s = time(runs, starts, || floor(black_box(text)));
        let row = |decoder, secs| Row {
            stream,
            decoder,
            secs,
            bytes: text.len(),
            stanzas,
            routes,
            floor: floor_s,
        };
        print(&row("quick-xml events (floor)", floor_s));
        let decoding = if is_cn {
            RouteDecoding::CnMessages
        } else {
            RouteDecoding::AgentIqs
        };
        type Decoder<'a> = Box<dyn FnMut() -> usize + 'a>;
        let decoders: [(&str, usize, Decoder); 3] = [
            (
                "framer only",
                stanzas,
                Box::new(|| {
                    let mut n = 0;
                    frames(text.as_bytes(), |s| {
                        black_box(s.text().expect("utf-8"));
                        n += 1;
                    });
                    n
                }),
            ),
            (
                "framer + element tree + decode",
                routes,
                Box::new(|| {
                    let mut n = 0;
                    tree_frames(text.as_bytes(), |st| {
                        n += if is_cn {
                            cn_routes(&decode_cn_message(&st).expect("decode"))
                        } else {
                            agent_routes(&decode_agent_iq(&st).expect("decode"))
                        };
                    });
                    n
                }),
            ),
            (
                "framer + fast decode",
                routes,
                Box::new(|| {
                    let mut n = 0;
                    frames(text.as_bytes(), |s| {
                        n += match decoding.decode(s.text().expect("utf-8")) {
                            Some(RouteStanza::Cn(m)) => cn_routes(&m),
                            Some(RouteStanza::Agent(iq)) => agent_routes(&iq),
                            None => panic!("not on the fast path"),
                        };
                    });
                    n
                }),
            ),
        ];
        for (name, want, mut f) in decoders {
            if selected(name) {
                print(&row(name, time(runs, want, &mut f)));
            }
        }
    }

    // Encoding the same streams: the element-tree writer (what the encoders did before) and
    // the direct writers now used.
    println!("\n| encode                                  | seconds |   routes/s |");
    println!("|-----------------------------------------|--------:|-----------:|");
    let n = pairs;
    let entries: Vec<EnetEntry> = (0..n).map(entry).collect();
    let tree_pub = time(runs, n, || {
        entries
            .iter()
            .map(|e| {
                let el = Element::new("item").child_with(e.to_element());
                black_box(el.to_xml());
                1
            })
            .sum()
    });
    let direct_pub = time(runs, n, || {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                black_box(encode_route_publish(AGENT, VRF, e, true, i as u64));
                1
            })
            .sum()
    });
    let tree_upd = time(runs, n, || {
        entries
            .chunks(MAX_ITEMS_PER_MESSAGE)
            .map(|c| {
                let mut items = Element::new("items");
                for e in c {
                    items.push(
                        Element::new("item")
                            .attr_with("id", e.nlri.item_id())
                            .child_with(e.to_element_with("0.0.0.0")),
                    );
                }
                black_box(items.to_xml());
                c.len()
            })
            .sum()
    });
    let direct_upd = time(runs, n, || {
        black_box(encode_route_update_bodies(VRF, &entries));
        n
    });
    for (what, secs) in [
        ("publish entry via element tree (before)", tree_pub),
        ("encode_route_publish, direct (pair)", direct_pub),
        ("update bodies via element tree (before)", tree_upd),
        ("encode_route_update_bodies, direct", direct_upd),
    ] {
        println!("| {what:<39} | {secs:>7.3} | {:>10.0} |", n as f64 / secs);
    }
}
