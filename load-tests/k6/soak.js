// Soak: a moderate constant arrival rate for a bounded time, to show leaks
// (memory, connections, latency creeping up) that short runs hide.
//   k6 run load-tests/k6/soak.js                      (10 minutes, 30 journeys/s)
//   SOAK_DURATION=30m RATE=50 k6 run load-tests/k6/soak.js
// The duration is capped at 2 h whatever SOAK_DURATION says.
// Watch the gateway meanwhile: curl -s 127.0.0.1:9000/metrics, ps -o rss= -p <pid>.
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { BASE_URL, journey, params, runId, seedProduct } from './lib.js';

function capped(d) {
  const m = /^(\d+)(s|m|h)$/.exec(d || '10m');
  if (!m) throw new Error(`SOAK_DURATION must look like 90s, 10m or 1h, got ${d}`);
  const secs = Number(m[1]) * { s: 1, m: 60, h: 3600 }[m[2]];
  return `${Math.min(secs, 7200)}s`;
}

const journeysFailed = new Counter('journeys_failed');

export const options = {
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 30),
      timeUnit: '1s',
      duration: capped(__ENV.SOAK_DURATION),
      preAllocatedVUs: 20,
      maxVUs: 200,
      gracefulStop: '15s',
    },
  },
  thresholds: {
    checks: ['rate>0.995'],
    http_req_failed: ['rate<0.005'],
    http_req_duration: ['p(99)<1000'],
    'http_req_duration{name:GET /order/orders/{id}}': ['p(99)<200'],
    journeys_failed: ['count<10'],
    dropped_iterations: ['count<100'],
  },
};

export function setup() {
  const productId = `soak-prod-${runId()}`;
  seedProduct(productId, 100000000);
  return { productId };
}

export default function (data) {
  if (!journey(`soak-cust-${__VU}`, data.productId)) journeysFailed.add(1);
  const r = http.get(`${BASE_URL}/notification/notifications?order_id=soak-none`, params('GET /notification/notifications'));
  check(r, { 'notifications: 200': (x) => x.status === 200 });
}
