// Tokenizes every shipped task (tasks/*.ksim) with the extension's TextMate grammar
// (vscode-textmate + vscode-oniguruma, the engine VS Code uses) and checks that
// keywords, numbers with units, strings, globs and comments get the right scopes.
//
//   npm install && npm test
"use strict";

const fs = require("fs");
const path = require("path");
const assert = require("assert");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const ROOT = path.resolve(__dirname, "..", "..", "..");
const TASKS = process.env.KSIM_TASKS_DIR || path.join(ROOT, "tasks");
const GRAMMAR = path.join(__dirname, "..", "syntaxes", "ksim.tmLanguage.json");
const STATEMENTS = [
  "task", "model", "physics", "engine", "episode", "actuators", "let", "state", "command",
  "observe", "reward", "terminate", "metric", "randomize", "reset", "event", "curriculum", "policy", "train",
];

async function loadGrammar() {
  const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm")).buffer;
  await oniguruma.loadWASM(wasm);
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async (scopeName) =>
      scopeName === "source.ksim" ? vsctm.parseRawGrammar(fs.readFileSync(GRAMMAR, "utf8"), GRAMMAR) : null,
  });
  return registry.loadGrammar("source.ksim");
}

function tokenize(grammar, text) {
  let stack = vsctm.INITIAL;
  return text.split("\n").map((line) => {
    const r = grammar.tokenizeLine(line, stack);
    stack = r.ruleStack;
    return { line, tokens: r.tokens.map((t) => ({ start: t.startIndex, end: t.endIndex, scopes: t.scopes })) };
  });
}

// Scopes of the character at `col` of a tokenized line.
function scopesAt(tl, col) {
  const t = tl.tokens.find((tok) => tok.start <= col && col < tok.end);
  return t ? t.scopes : [];
}

function has(scopes, prefix) {
  return scopes.some((s) => s.startsWith(prefix));
}

// Regions of a line: strings [a, b) and the comment start (outside strings), as the lexer sees them.
function regions(line) {
  const strings = [];
  let comment = -1;
  for (let i = 0; i < line.length; i++) {
    if (line[i] === '"') {
      const j = line.indexOf('"', i + 1);
      const end = j < 0 ? line.length : j + 1;
      strings.push([i, end]);
      i = end - 1;
    } else if (line[i] === "#") {
      comment = i;
      break;
    }
  }
  return { strings, comment };
}

function checkFile(grammar, file, counts) {
  const text = fs.readFileSync(file, "utf8");
  const lines = tokenize(grammar, text);
  const where = (n, col) => `${path.basename(file)}:${n + 1}:${col + 1}`;
  lines.forEach((tl, n) => {
    const { strings, comment } = regions(tl.line);
    const code = (col) => (comment < 0 || col < comment) && !strings.some(([a, b]) => a <= col && col < b);
    // comments: every character from '#' to the end of the line
    if (comment >= 0) {
      for (let c = comment; c < tl.line.length; c++) {
        assert(has(scopesAt(tl, c), "comment.line.number-sign"), `${where(n, c)}: not a comment`);
      }
      counts.comments++;
    }
    // statement keywords at the start of a line
    const kw = /^([a-z_]+)\b/.exec(tl.line);
    if (kw && STATEMENTS.includes(kw[1])) {
      assert(has(scopesAt(tl, 0), "keyword.control.statement"), `${where(n, 0)}: '${kw[1]}' is not a keyword`);
      counts.keywords++;
    }
    // strings, and glob characters inside them
    for (const [a, b] of strings) {
      for (let c = a; c < b; c++) {
        assert(has(scopesAt(tl, c), "string.quoted.double"), `${where(n, c)}: not in a string`);
        if ("*?".includes(tl.line[c])) {
          assert(has(scopesAt(tl, c), "constant.character.wildcard.glob"), `${where(n, c)}: glob not marked`);
          counts.globs++;
        }
      }
      counts.strings++;
    }
    // numbers, with their units (the unit rule of grammar/ksim.lark's NUMBER terminal)
    const num = /(?<![A-Za-z0-9_])([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)(?:(deg|ms|m|s|steps)(?![A-Za-z0-9_])|([ ]+)(deg|ms|s|steps)(?![A-Za-z0-9_=]))?/g;
    let m;
    while ((m = num.exec(tl.line))) {
      if (!code(m.index)) continue;
      assert(has(scopesAt(tl, m.index), "constant.numeric"), `${where(n, m.index)}: number '${m[1]}' not numeric`);
      const unit = m[2] || m[4];
      if (unit) {
        const at = m.index + m[1].length + (m[3] ? m[3].length : 0);
        assert(has(scopesAt(tl, at), "keyword.other.unit"), `${where(n, at)}: unit '${unit}' not marked`);
        counts.units++;
      }
      counts.numbers++;
    }
    // every visible character of code has a ksim scope (nothing falls through)
    for (let c = 0; c < tl.line.length; c++) {
      if (/\s/.test(tl.line[c]) || !code(c)) continue;
      const scopes = scopesAt(tl, c);
      assert(scopes.length > 1, `${where(n, c)}: '${tl.line[c]}' has no scope`);
    }
  });
  return lines;
}

function spotChecks(grammar) {
  const [tl] = tokenize(grammar, 'latency 0..10ms  kp["*_knee*"] = 80 # c');
  assert(has(scopesAt(tl, 8), "constant.numeric"));
  assert(has(scopesAt(tl, 9), "keyword.operator.range"));
  assert(has(scopesAt(tl, 11), "constant.numeric"));
  assert(has(scopesAt(tl, 13), "keyword.other.unit"));
  const [train] = tokenize(grammar, "train num_envs=128 rollout=24 steps=1000");
  const steps = train.line.indexOf("steps");
  assert(has(scopesAt(train, steps), "variable.parameter"), "`steps=` is a setting, not a unit");
  const [ep] = tokenize(grammar, "episode 1000 steps");
  assert(has(scopesAt(ep, 13), "keyword.other.unit"), "`1000 steps` has a unit");
  const [call] = tokenize(grammar, "    air_time 0.2 * level : where(feet and not prev(feet), 1, 0)");
  assert(has(scopesAt(call, call.line.indexOf("where")), "support.function.builtin"));
  assert(has(scopesAt(call, call.line.indexOf("level")), "support.variable.quantity"));
  assert(has(scopesAt(call, call.line.indexOf("and")), "keyword.operator.logical"));
}

async function main() {
  const grammar = await loadGrammar();
  spotChecks(grammar);
  const files = fs.readdirSync(TASKS).filter((f) => f.endsWith(".ksim")).sort();
  assert(files.length > 0, `no .ksim files in ${TASKS}`);
  const counts = { keywords: 0, numbers: 0, units: 0, strings: 0, globs: 0, comments: 0 };
  for (const f of files) {
    checkFile(grammar, path.join(TASKS, f), counts);
  }
  for (const k of Object.keys(counts)) assert(counts[k] > 0, `no ${k} seen`);
  console.log(`ok: ${files.length} tasks tokenized; ` + Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", "));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
