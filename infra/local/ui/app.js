// The timeline page: an entity's history from the public time-travel API, stepped through
// in time, with the state after each step and what changed. It calls the API as any client
// does, with the bearer token given in the page's fragment (`#token=...`, never sent to the
// server) and kept for the tab. `#entity=ride/<id>&version=<n>` opens an entity at a step.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.hash.slice(1));
if (params.get("token")) sessionStorage.setItem("token", params.get("token"));
const token = sessionStorage.getItem("token");

async function api(path) {
  const response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || body.title || `${response.status} on ${path}`);
  return body;
}

function say(text) {
  $("message").textContent = text;
}

// Nested objects as dotted paths to their leaves.
function flatten(value, prefix = "", into = {}) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, into);
  } else {
    into[prefix] = value;
  }
  return into;
}

const show = (v) => (v === null || v === undefined ? "-" : typeof v === "object" ? JSON.stringify(v) : String(v));

let timeline = null;

function render(index) {
  const steps = timeline.steps;
  if (!steps.length) return;
  index = Math.max(0, Math.min(index, steps.length - 1));
  $("step").value = index;
  const step = steps[index];
  document.querySelectorAll(".axis .mark").forEach((m, i) => m.classList.toggle("current", i === index));
  document.querySelectorAll("#events li").forEach((li, i) => li.classList.toggle("current", i === index));
  $("event").innerHTML = "";
  const line = document.createElement("div");
  line.innerHTML = `<strong>v${step.version} ${step.type}</strong> at ${step.occurred_at} by <em></em>` +
    ` &rarr; <strong class="status"></strong>`;
  line.querySelector("em").textContent = step.actor;
  line.querySelector(".status").textContent = step.status_after + (step.reason ? ` (${step.reason})` : "");
  $("event").append(line);
  const before = index > 0 ? flatten(steps[index - 1].state_after) : {};
  const after = flatten(step.state_after);
  $("state").innerHTML = "";
  for (const [field, value] of Object.entries(after).sort()) {
    const row = document.createElement("tr");
    const changed = index > 0 && show(before[field]) !== show(value);
    row.innerHTML = `<td></td><td${changed ? ' class="changed"' : ""}></td>`;
    row.dataset.field = field;
    row.cells[0].textContent = field;
    row.cells[1].textContent = show(value) + (changed ? `  (was ${show(before[field])})` : "");
    $("state").append(row);
  }
  history.replaceState(null, "", `#entity=${timeline.kind}/${encodeURIComponent(timeline.id)}&version=${step.version}`);
}

function axis(steps) {
  // Every event, in order, with who did it and why.
  $("events").innerHTML = "";
  steps.forEach((s, i) => {
    const li = document.createElement("li");
    li.value = s.version;
    li.textContent = `${s.occurred_at}  v${s.version} ${s.type} by ${s.actor} -> ${s.status_after}` +
      (s.reason ? ` (${s.reason})` : "");
    li.addEventListener("click", () => render(i));
    $("events").append(li);
  });
  $("axis").innerHTML = "";
  const times = steps.map((s) => Date.parse(s.occurred_at));
  const [first, last] = [Math.min(...times), Math.max(...times)];
  steps.forEach((s, i) => {
    const mark = document.createElement("button");
    mark.className = "mark";
    mark.title = `v${s.version} ${s.type} at ${s.occurred_at}`;
    mark.style.left = `${last > first ? ((times[i] - first) / (last - first)) * 100 : 50}%`;
    mark.innerHTML = `<span>v${s.version}</span>`;
    mark.addEventListener("click", () => render(i));
    $("axis").append(mark);
  });
}

function incomplete(answer) {
  const box = $("incomplete");
  const parts = [];
  if (answer.missing_versions?.length) parts.push(`missing versions ${answer.missing_versions.join(", ")}`);
  for (const issue of answer.issues || []) parts.push(show(issue));
  for (const p of answer.problems || []) parts.push(`log unreadable at ${p.location}: ${p.reason}`);
  box.hidden = answer.complete && !parts.length;
  box.textContent = box.hidden ? "" : `Incomplete history: ${parts.join("; ") || "not every version could be read"}`;
}

async function open(kind, id, version) {
  say(`loading ${kind} ${id}...`);
  try {
    const answer = await api(`/${kind}s/${encodeURIComponent(id)}/timeline`);
    timeline = { kind, id, steps: answer.steps || [] };
    $("entity").hidden = false;
    $("title").textContent = `${kind} ${id}: ${timeline.steps.length} events`;
    // The status path, the way a video's life reads.
    $("path").innerHTML = "";
    timeline.steps.forEach((s, i) => {
      const part = document.createElement("span");
      part.textContent = s.status_after + (s.reason ? ` (${s.reason})` : "");
      if (s.status_after === "failed") part.className = "failed";
      if (i) $("path").append(" \u2192 ");
      $("path").append(part);
    });
    incomplete(answer);
    $("step").max = Math.max(0, timeline.steps.length - 1);
    axis(timeline.steps);
    const at = timeline.steps.findIndex((s) => String(s.version) === String(version));
    render(at >= 0 ? at : timeline.steps.length - 1);
    say(answer.exists === false ? `${kind} ${id} does not exist` : "");
  } catch (e) {
    $("entity").hidden = true;
    say(`could not open ${kind} ${id}: ${e.message}`);
  }
}

async function list(by, value) {
  const path = by === "video-status" ? `/videos?status=${encodeURIComponent(value)}` : `/rides?${by}=${encodeURIComponent(value)}`;
  const kind = by === "video-status" ? "video" : "ride";
  try {
    const page = await api(path);
    $("results").innerHTML = "";
    for (const item of page.items) {
      const li = document.createElement("li");
      li.textContent = `${item.aggregate_id} (${item.status}, v${item.version})`;
      li.addEventListener("click", () => open(kind, item.aggregate_id));
      $("results").append(li);
    }
    say(page.items.length ? "" : "nothing listed");
  } catch (e) {
    say(`could not list: ${e.message}`);
  }
}

$("find").addEventListener("submit", (e) => {
  e.preventDefault();
  open($("kind").value, $("id").value.trim());
});
$("list").addEventListener("submit", (e) => {
  e.preventDefault();
  list($("by").value, $("value").value.trim());
});
$("step").addEventListener("input", (e) => render(Number(e.target.value)));
$("prev").addEventListener("click", () => render(Number($("step").value) - 1));
$("next").addEventListener("click", () => render(Number($("step").value) + 1));

if (!token) say("No token: open the URL the runner prints (it carries one), or add #token=<token from `timeline-local token`>.");
const entity = params.get("entity");
if (entity && entity.includes("/")) {
  const [kind, id] = entity.split("/");
  open(kind, decodeURIComponent(id), params.get("version"));
}
