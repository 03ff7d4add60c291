// One long-lived STS client of the JavaScript SDK v3 with its default credentials chain, calling
// GetCallerIdentity once a second; prints what it saw as one JSON line.
//   node client.mjs STS_URL SECONDS
import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";

const [stsUrl, seconds] = process.argv.slice(2);
const client = new STSClient({ region: "us-east-1", endpoint: stsUrl });
const end = Date.now() + Number(seconds) * 1000;
let calls = 0;
const errors = [];
const keys = [];
while (Date.now() < end) {
  try {
    await client.send(new GetCallerIdentityCommand({}));
    calls += 1;
  } catch (error) {
    errors.push(`${error.name}: ${String(error.message).slice(0, 120)}`);
  }
  try {
    const identity = await client.config.credentials();
    if (!keys.includes(identity.accessKeyId)) keys.push(identity.accessKeyId);
  } catch (error) {
    errors.push(`credentials: ${error.name}`);
  }
  await new Promise((resolve) => setTimeout(resolve, 1000)); // the client's pace
}
console.log(JSON.stringify({ calls, errors, keys }));
