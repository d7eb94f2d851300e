// The official `openai` npm package as a real client of `switchyard serve-api --http` (run by
// tests/system/http_api_test.sh). Greedy completions and chat completions, plain and streamed,
// must equal the texts `switchyard generate` printed for the same prompts; bad requests must
// surface as the package's typed APIErrors with the right status.
// Usage: node openai_client.mjs NODE_MODULES BASE_URL MODEL API_KEY CASES_JSON
//   CASES_JSON: {"ids": {"prompt": [..], "max_tokens": N, "expected_file": F},
//                "text": {"prompt": "..", ...}, "chat": {"prompt": "..", ...}}
//   where each expected_file holds `switchyard generate` stdout (the text plus one newline).
// Prints one "ok: ..." line per check; exits 1 naming the first mismatch.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const [nodeModules, baseUrl, model, apiKey, casesFile] = process.argv.slice(2);
if (!casesFile) {
  console.error('usage: node openai_client.mjs NODE_MODULES BASE_URL MODEL API_KEY CASES_JSON');
  process.exit(2);
}
const require = createRequire(path.join(nodeModules, 'noop.js'));
const { OpenAI } = require('openai');  // its statics carry the error classes
const cases = JSON.parse(readFileSync(casesFile, 'utf8'));
const expected = (c) => readFileSync(c.expected_file, 'utf8').replace(/\n$/, '');

// No retries: a 429/5xx must show up here, not be hidden by the client's backoff.
const client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey, maxRetries: 0, timeout: 120_000 });

function fail(message) {
  console.error(`openai_client: FAILED: ${message}`);
  process.exit(1);
}
function same(what, got, want) {
  if (got !== want) fail(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  console.log(`ok: ${what}`);
}
async function expectApiError(what, status, ErrorClass, call) {
  try {
    await call();
  } catch (e) {
    if (!(e instanceof OpenAI.APIError)) fail(`${what}: not an APIError: ${e}`);
    if (!(e instanceof ErrorClass)) fail(`${what}: ${e.constructor.name}, want ${ErrorClass.name}`);
    if (e.status !== status) fail(`${what}: status ${e.status}, want ${status} (${e.message})`);
    if (typeof e.error?.message !== 'string' || !('code' in e.error) || !('param' in e.error)) {
      fail(`${what}: the error body is not OpenAI's shape: ${JSON.stringify(e.error)}`);
    }
    console.log(`ok: ${what} -> ${status} ${e.error.message}`);
    return;
  }
  fail(`${what}: succeeded, want status ${status}`);
}

const models = await client.models.list();
same('models.list names the served model', models.data.map((m) => m.id).join(','), model);

// Completions: token ids and text, greedy.
for (const key of ['ids', 'text']) {
  const c = cases[key];
  const r = await client.completions.create({ model, prompt: c.prompt, max_tokens: c.max_tokens, temperature: 0 });
  same(`completions (${key} prompt) equal switchyard generate`, r.choices[0].text, expected(c));
  same(`completions (${key} prompt) usage adds up`, r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
}

// Completions streamed, with the usage chunk.
{
  const c = cases.ids;
  const stream = await client.completions.create({
    model, prompt: c.prompt, max_tokens: c.max_tokens, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length > 0) text += chunk.choices[0].text;
    if (chunk.usage) usage = chunk.usage;
  }
  same('streamed completions equal switchyard generate', text, expected(c));
  if (!usage || usage.prompt_tokens !== c.prompt.length) fail(`streamed usage: ${JSON.stringify(usage)}`);
  console.log('ok: streamed completions report usage');
}

// Chat completions, plain and streamed: one user turn, as `switchyard generate --chat`.
{
  const c = cases.chat;
  const messages = [{ role: 'user', content: c.prompt }];
  const r = await client.chat.completions.create({ model, messages, max_tokens: c.max_tokens, temperature: 0 });
  same('chat completion equals switchyard generate --chat', r.choices[0].message.content, expected(c));
  same('chat completion role', r.choices[0].message.role, 'assistant');

  const stream = await client.chat.completions.create({
    model, messages, max_tokens: c.max_tokens, temperature: 0, stream: true,
  });
  let text = '';
  let finish = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    text += chunk.choices[0]?.delta?.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  same('streamed chat equals switchyard generate --chat', text, expected(c));
  same('streamed chat finish_reason', finish, r.choices[0].finish_reason);
  if (chunks < 3) fail(`streamed chat came in ${chunks} chunks`);
}

// Bad requests surface as typed APIErrors.
await expectApiError('max_tokens 0', 400, OpenAI.BadRequestError, () =>
  client.completions.create({ model, prompt: 'hi', max_tokens: 0 }));
await expectApiError('top_p 1.5', 400, OpenAI.BadRequestError, () =>
  client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], top_p: 1.5 }));
await expectApiError('unknown model', 404, OpenAI.NotFoundError, () =>
  client.completions.create({ model: 'no-such-model', prompt: 'hi', max_tokens: 2 }));
await expectApiError('prompt longer than the context', 400, OpenAI.BadRequestError, () =>
  client.completions.create({ model, prompt: Array(cases.context + 1).fill(5), max_tokens: 2 }));
const wrongKey = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
await expectApiError('wrong API key', 401, OpenAI.AuthenticationError, () => wrongKey.models.list());
await expectApiError('wrong API key on a stream', 401, OpenAI.AuthenticationError, () =>
  wrongKey.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], stream: true }));

// And the server still answers correctly after all that.
{
  const c = cases.ids;
  const r = await client.completions.create({ model, prompt: c.prompt, max_tokens: c.max_tokens, temperature: 0 });
  same('completions after the bad requests', r.choices[0].text, expected(c));
}
console.log('openai_client: ok');
