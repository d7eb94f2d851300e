// A bounded load generator for the OpenAI-compatible HTTP API (run by tests/system/
// http_load_test.sh, loopback only): CLIENTS concurrent clients, each sending streaming chat
// completions back to back for SECONDS, every stream read to its `data: [DONE]`. Node 20's own
// fetch; no packages. Prints one JSON line: requests, tokens, status counts, errors (first few),
// and for 429/503 answers whether each carried Retry-After.
// Usage: node http_load.mjs BASE_URL MODEL CLIENTS SECONDS MAX_TOKENS
const [baseUrl, model, clientsArg, secondsArg, maxTokensArg] = process.argv.slice(2);
if (!maxTokensArg) {
  console.error('usage: node http_load.mjs BASE_URL MODEL CLIENTS SECONDS MAX_TOKENS');
  process.exit(2);
}
const clients = Number(clientsArg);
const deadline = Date.now() + Number(secondsArg) * 1000;
const stats = { requests: 0, completed: 0, tokens: 0, status: {}, refused_without_retry_after: 0, errors: [] };

async function one(i, n) {
  const res = await fetch(`${baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      model,
      messages: [{ role: 'user', content: `client ${i} request ${n}: tell me something` }],
      max_tokens: Number(maxTokensArg),
      temperature: 0,
      stream: true,
    }),
  });
  stats.requests += 1;
  stats.status[res.status] = (stats.status[res.status] ?? 0) + 1;
  if (res.status === 429 || res.status === 503) {
    if (!res.headers.get('retry-after')) stats.refused_without_retry_after += 1;
    await res.text();
    return;
  }
  if (res.status !== 200) {
    if (stats.errors.length < 5) stats.errors.push(`${res.status}: ${(await res.text()).slice(0, 200)}`);
    return;
  }
  const text = await res.text();
  for (const line of text.split('\n')) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
    const chunk = JSON.parse(line.slice(6));
    if (chunk.choices?.[0]?.delta?.content) stats.tokens += 1;
  }
  if (!text.includes('data: [DONE]')) {
    if (stats.errors.length < 5) stats.errors.push(`stream without [DONE]: ${text.slice(-200)}`);
    return;
  }
  stats.completed += 1;
}

async function client(i) {
  for (let n = 0; Date.now() < deadline; ++n) {
    try {
      await one(i, n);
    } catch (e) {
      if (stats.errors.length < 5) stats.errors.push(`client ${i}: ${e.message}`);
      stats.status.network = (stats.status.network ?? 0) + 1;
    }
  }
}

await Promise.all(Array.from({ length: clients }, (_, i) => client(i)));
console.log(JSON.stringify(stats));
