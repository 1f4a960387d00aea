//! Cold starts: for each Lambda binary, the time from spawning the process to its first
//! `GET /2018-06-01/runtime/invocation/next` on a fake Runtime API, next to a minimal
//! `lambda_runtime` hello world built the same way, and the release binary sizes.
//! Prints figures; asserts nothing about them.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const NEXT_PATH: &str = "/2018-06-01/runtime/invocation/next";
const BASELINE: &str = "hello-lambda";
const PACKAGES: &str =
    "-p coldstart -p command-handler -p outbox-sweep -p processor -p query -p hydrator";

const STREAM: (&str, &str) = ("EVENT_STREAM_NAME", "timeline-events");
const WRITE: (&str, &str) = ("WRITE_MODEL_TABLE", "timeline-write-model");
const READ: (&str, &str) = ("READ_MODEL_TABLE", "timeline-read-models");
const BUCKET: (&str, &str) = ("ARCHIVE_BUCKET", "timeline-archive");
/// The processor's allocator setting, as the template gives it.
const MIMALLOC: (&str, &str) = ("MIMALLOC_ARENA_EAGER_COMMIT", "0");

/// A binary and the environment `template.yaml` gives its function.
struct Target {
    bin: &'static str,
    memory_mb: u32,
    vars: &'static [(&'static str, &'static str)],
}

const TARGETS: &[Target] = &[
    Target {
        bin: BASELINE,
        memory_mb: 256,
        vars: &[],
    },
    Target {
        bin: "command-handler",
        memory_mb: 256,
        vars: &[STREAM, WRITE],
    },
    Target {
        bin: "outbox-sweep",
        memory_mb: 256,
        vars: &[STREAM, WRITE],
    },
    Target {
        bin: "processor",
        memory_mb: 256,
        vars: &[READ, MIMALLOC],
    },
    Target {
        bin: "query",
        memory_mb: 256,
        vars: &[READ],
    },
    Target {
        bin: "hydrator",
        memory_mb: 1024,
        vars: &[STREAM, WRITE, READ, BUCKET],
    },
    Target {
        bin: "maintenance",
        memory_mb: 1024,
        vars: &[STREAM, WRITE, READ, BUCKET],
    },
    Target {
        bin: "hydrator-api",
        memory_mb: 512,
        vars: &[STREAM, WRITE, READ, BUCKET],
    },
];

#[derive(Parser)]
#[command(about = "Cold start of each Lambda binary against a minimal lambda_runtime hello world")]
struct Args {
    /// Measured cold starts per binary.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Unmeasured starts per binary first (page cache, first exec).
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Directory of the release binaries.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Seconds a binary has to call the Runtime API before it counts as failed.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
}

/// Why a start did not reach the Runtime API, with the end of what the process printed.
struct Failure {
    reason: String,
    stderr: String,
    stdout: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let timeout = Duration::from_secs(args.timeout_secs);

    let mut paths = Vec::new();
    let mut sizes = Vec::new();
    for t in TARGETS {
        let path = args.bin_dir.join(t.bin);
        let meta = std::fs::metadata(&path).with_context(|| {
            format!(
                "{} is missing; build it with `cargo build --release --locked {PACKAGES} --bins`",
                path.display()
            )
        })?;
        paths.push(path);
        sizes.push(meta.len());
    }

    println!(
        "machine: {} CPUs, {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| cpu_model(&s))
            .unwrap_or_else(|| "unknown CPU".into())
    );
    println!(
        "cold start = spawn to the first `GET {NEXT_PATH}` request line on a fake Runtime API \
         (127.0.0.1); {} runs per binary after {} warm-up, round-robin",
        args.runs, args.warmup
    );
    println!();

    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); TARGETS.len()];
    let mut failures: Vec<Option<Failure>> = TARGETS.iter().map(|_| None).collect();
    let rounds = (args.warmup + args.runs) as usize;
    for round in 0..rounds {
        // Rotate the order too, so no binary always follows the same one.
        for k in 0..TARGETS.len() {
            let i = (k + round) % TARGETS.len();
            if failures[i].is_some() {
                continue;
            }
            match cold_start(&paths[i], &env_for(&TARGETS[i]), timeout)? {
                Ok(d) if round >= args.warmup as usize => samples[i].push(d),
                Ok(_) => {}
                Err(f) => failures[i] = Some(f),
            }
        }
    }

    let medians: Vec<Option<f64>> = samples
        .iter()
        .map(|s| percentile(&sorted_ms(s), 0.5))
        .collect();
    let base = medians[0];
    println!(
        "{:<16} {:>9} {:>11} {:>9} {:>9} {:>8}",
        "binary", "size MB", "median ms", "p90 ms", "min ms", "ratio"
    );
    for (i, t) in TARGETS.iter().enumerate() {
        let size = format!("{:.1}", sizes[i] as f64 / 1e6);
        if failures[i].is_some() {
            println!("{:<16} {size:>9} {:>11}", t.bin, "FAILED");
            continue;
        }
        let ms = sorted_ms(&samples[i]);
        let (median, p90, min) = (medians[i].unwrap_or(f64::NAN), percentile(&ms, 0.9), ms[0]);
        let ratio = base.map_or("-".into(), |b| format!("{:.2}x", median / b));
        println!(
            "{:<16} {size:>9} {median:>11.2} {:>9.2} {min:>9.2} {ratio:>8}",
            t.bin,
            p90.unwrap_or(f64::NAN),
        );
    }

    let failed: Vec<_> = TARGETS
        .iter()
        .zip(&failures)
        .filter_map(|(t, f)| f.as_ref().map(|f| (t.bin, f)))
        .collect();
    for (bin, f) in &failed {
        println!("\n{bin} FAILED: {}", f.reason);
        for (name, text) in [("stderr", &f.stderr), ("stdout", &f.stdout)] {
            if !text.is_empty() {
                println!("--- {name} (last lines) ---\n{text}");
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} binaries did not start",
            failed.len(),
            TARGETS.len()
        );
    }
    Ok(())
}

/// What Lambda sets for a function (provided.al2023, JSON logs), plus dummy credentials and
/// an endpoint nobody listens on, so nothing can leave loopback.
fn env_for(t: &Target) -> Vec<(String, String)> {
    let fixed = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("TZ", ":UTC"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "coldstart"),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ];
    let mut env: Vec<(String, String)> = fixed
        .iter()
        .chain(t.vars)
        .map(|&(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("AWS_LAMBDA_FUNCTION_NAME".into(), t.bin.into()));
    env.push((
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
        t.memory_mb.to_string(),
    ));
    env.push((
        "AWS_LAMBDA_LOG_GROUP_NAME".into(),
        format!("/aws/lambda/{}", t.bin),
    ));
    env
}

/// One start: `Ok(Ok(time))`, `Ok(Err(failure))` when the binary did not get there, and
/// `Err` only when the harness itself could not run.
fn cold_start(
    path: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<std::result::Result<Duration, Failure>> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the fake Runtime API")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel();
    // The runtime's first connection carries the request being timed; the instant is taken
    // here, as soon as its line is read, so the main thread's polling does not blur it.
    let api = thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            let at = Instant::now();
            let _ = tx.send((at, read.map(|_| line)));
            // Hold the connection open until the child is killed.
            let _ = reader.read(&mut [0; 1]);
        }
    });

    let mut cmd = Command::new(path);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", path.display()))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());

    let deadline = start + timeout;
    let outcome = loop {
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok((at, Ok(line))) if is_next_request(&line) => break Ok(at - start),
            Ok((_, Ok(line))) => {
                break Err(format!(
                    "first request was {:?}, not GET {NEXT_PATH}",
                    line.trim_end()
                ))
            }
            Ok((_, Err(e))) => break Err(format!("reading its first request: {e}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err("fake API stopped".into()),
        }
        if let Some(status) = child.try_wait()? {
            // It may have asked just before exiting.
            if let Ok((at, Ok(line))) = rx.try_recv() {
                if is_next_request(&line) {
                    break Ok(at - start);
                }
            }
            break Err(format!("exited ({status}) before calling the Runtime API"));
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "no Runtime API request within {} s",
                timeout.as_secs()
            ));
        }
    };

    let _ = child.kill();
    child.wait()?;
    // Unblock the accept if the child never connected.
    let _ = TcpStream::connect(addr);
    let _ = api.join();
    let stdout = tail(&out.join().unwrap_or_default(), 15);
    let stderr = tail(&err.join().unwrap_or_default(), 15);
    Ok(outcome.map_err(|reason| Failure {
        reason,
        stderr,
        stdout,
    }))
}

/// Reads a pipe to the end on its own thread, so a chatty child never blocks on it.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `GET /2018-06-01/runtime/invocation/next HTTP/1.1`, with or without its line ending.
fn is_next_request(line: &str) -> bool {
    let mut parts = line.trim_end_matches(['\r', '\n']).split(' ');
    parts.next() == Some("GET")
        && parts.next() == Some(NEXT_PATH)
        && parts.next().is_some_and(|v| v.starts_with("HTTP/1."))
        && parts.next().is_none()
}

fn sorted_ms(samples: &[Duration]) -> Vec<f64> {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// The `q` quantile (0..=1) of sorted values, interpolating linearly between the two nearest
/// ranks, so the 0.5 quantile of an even count is the mean of the middle two.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(last);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// The CPU's name from `/proc/cpuinfo` (`model name` on x86, `CPU part` on Arm).
fn cpu_model(cpuinfo: &str) -> Option<String> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    field("model name").or_else(|| field("CPU part").map(|p| format!("Arm CPU part {p}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_between_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), Some(2.5));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 1.0), Some(4.0));
        assert_eq!(percentile(&[1.0, 2.0, 10.0], 0.5), Some(2.0));
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        let p90 = percentile(&twenty, 0.9).unwrap();
        assert!((p90 - 18.1).abs() < 1e-9, "{p90}");
        assert_eq!(percentile(&[7.0], 0.9), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn only_the_next_invocation_request_counts() {
        assert!(is_next_request(
            "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n"
        ));
        assert!(is_next_request(
            "GET /2018-06-01/runtime/invocation/next HTTP/1.1"
        ));
        assert!(!is_next_request(
            "POST /2018-06-01/runtime/invocation/next HTTP/1.1\r\n"
        ));
        assert!(!is_next_request(
            "GET /2018-06-01/runtime/init/error HTTP/1.1\r\n"
        ));
        assert!(!is_next_request(
            "GET /2018-06-01/runtime/invocation/next/x HTTP/1.1\r\n"
        ));
        assert!(!is_next_request(""));
    }

    #[test]
    fn cpu_model_on_x86_and_arm() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) X\n";
        assert_eq!(cpu_model(x86).as_deref(), Some("Intel(R) Xeon(R) X"));
        let arm = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n";
        assert_eq!(cpu_model(arm).as_deref(), Some("Arm CPU part 0xd0c"));
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail(b"a\n", 5), "a");
        assert_eq!(tail(b"", 5), "");
    }
}
