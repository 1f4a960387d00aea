//! A function's own binary run as Lambda runs it: a process with Lambda's environment that
//! asks a Runtime API (served here, on loopback) for its next invocation and posts the answer.
//! The tests hand it events and read the answers, or watch it refuse to start.

use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const PREFIX: &str = "/2018-06-01/runtime";

#[derive(Default)]
struct State {
    pending: VecDeque<(String, String)>,
    answers: HashMap<String, Result<Value, String>>,
    next_id: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

pub struct LambdaProcess {
    child: Child,
    shared: Arc<Shared>,
    output: Arc<Mutex<String>>,
}

impl LambdaProcess {
    /// Starts `binary` with Lambda's variables for a function of that name, the given ones,
    /// and nothing else from this process's environment.
    pub fn spawn(binary: &Path, env: &[(&str, &str)]) -> LambdaProcess {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the Runtime API");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let shared = serving.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        let name = binary.file_name().unwrap().to_string_lossy().into_owned();
        let mut child = Command::new(binary)
            .env_clear()
            .envs([
                ("PATH", "/usr/local/bin:/usr/bin:/bin"),
                ("TZ", ":UTC"),
                ("AWS_LAMBDA_RUNTIME_API", &addr.to_string()),
                ("AWS_LAMBDA_FUNCTION_NAME", &name),
                ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
                ("AWS_LAMBDA_LOG_GROUP_NAME", &format!("/aws/lambda/{name}")),
                ("AWS_LAMBDA_LOG_STREAM_NAME", "test"),
                ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("AWS_CONFIG_FILE", "/dev/null"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // Lambda sends both to the function's log.
        let output = Arc::new(Mutex::new(String::new()));
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for mut pipe in pipes {
            let kept = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    kept.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        LambdaProcess {
            child,
            shared,
            output,
        }
    }

    /// One invocation with `payload`: the function's answer, or its error document.
    pub fn invoke(&self, payload: &Value) -> Result<Value, String> {
        let id = {
            let mut state = self.shared.state.lock().unwrap();
            state.next_id += 1;
            let id = format!("request-{}", state.next_id);
            state.pending.push_back((id.clone(), payload.to_string()));
            id
        };
        self.shared.changed.notify_all();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut state = self.shared.state.lock().unwrap();
        loop {
            if let Some(answer) = state.answers.remove(&id) {
                return answer;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no answer to {id} within 60 s; the function said:\n{}",
                self.log()
            );
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
    }

    /// How the process ended, if it ends within `timeout` (one that refuses to start does).
    pub fn exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// What the function wrote so far (its log: stdout and stderr).
    pub fn log(&self) -> String {
        // Let the readers catch up with a process that just ended.
        std::thread::sleep(Duration::from_millis(50));
        self.output.lock().unwrap().clone()
    }
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive connection of the runtime client.
fn serve(stream: TcpStream, shared: &Shared) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let Some(body) = read_body(&mut reader, &headers) else {
            return;
        };
        let route = path.strip_prefix(PREFIX).unwrap_or(&path);
        let reply = if method == "GET" && route == "/invocation/next" {
            let (id, payload) = next_event(shared);
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 60_000;
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {id}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:test\r\nLambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000\r\nContent-Length: {}\r\n\r\n{payload}",
                payload.len()
            )
        } else if method == "POST" {
            let text = String::from_utf8_lossy(&body).into_owned();
            let answer = match route.rsplit_once('/') {
                Some((id, "response")) => Some((id, serde_json::from_str(&text).map_err(|_| text))),
                Some((id, "error")) => Some((id, Err(text))),
                _ => None,
            };
            if let Some((id, answer)) = answer {
                let id = id.trim_start_matches("/invocation/").to_owned();
                shared.state.lock().unwrap().answers.insert(id, answer);
                shared.changed.notify_all();
            }
            "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}".to_owned()
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
        };
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn next_event(shared: &Shared) -> (String, String) {
    let mut state = shared.state.lock().unwrap();
    loop {
        if let Some(event) = state.pending.pop_front() {
            return event;
        }
        state = shared.changed.wait(state).unwrap();
    }
}

fn read_body(reader: &mut impl BufRead, headers: &HashMap<String, String>) -> Option<Vec<u8>> {
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                return Some(body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let len = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}
