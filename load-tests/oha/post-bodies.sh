#!/usr/bin/env bash
# oha scenario: POST with request bodies through the gateway.
#
#   load-tests/oha/post-bodies.sh                # full stack on :8000: POST /order/orders
#   MODE=bench load-tests/oha/post-bodies.sh     # bench upstreams + gateway on :18090:
#                                                # POST / with bodies of SIZES bytes
# Environment: BASE_URL [http://127.0.0.1:8000] (stack mode), CONNS [32],
#   DURATION [10s per size], SIZES ["256 4096 65536 1048576"] (bench mode),
#   WORKERS [2] (bench mode), MAX_ERROR_PCT [0].
# Stack mode creates real orders (expects 201); bench mode checks that the bodies
# stream through (expects 200 from the upstream, which discards them).
# Exits non-zero when requests fail.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LT_NAME=post-bodies
. "$HERE/../lib.sh"

MODE=${MODE:-stack}
CONNS=${CONNS:-32}
DURATION=${DURATION:-10s}
SIZES=${SIZES:-"256 4096 65536 1048576"}
MAX_ERROR_PCT=${MAX_ERROR_PCT:-0}
need_tools oha python3 curl
rc=0

case $MODE in
bench)
    need_tools nginx ss
    check_ports $UP1 $UP2 $ST1 $ST2 $PROXY_PORT $ADMIN_PORT
    start_upstreams
    start_gateway "${WORKERS:-2}"
    for size in $SIZES; do
        body=$TMP/body-$size.json
        python3 -c "import sys; n=int(sys.argv[1]); p='{\"pad\":\"'; s='\"}'; sys.stdout.write(p + 'x' * max(0, n - len(p) - len(s)) + s)" "$size" >"$body"
        log "POST $size-byte bodies to http://127.0.0.1:$PROXY_PORT/ (-c $CONNS -z $DURATION)"
        timeout 3600 oha --no-tui --output-format json -c "$CONNS" -z "$DURATION" -m POST \
            -T application/json -D "$body" "http://127.0.0.1:$PROXY_PORT/" >"$TMP/post-$size.json"
        python3 "$HERE/summarize.py" "$TMP/post-$size.json" --label "POST ${size} B bodies" \
            --max-error-pct "$MAX_ERROR_PCT" || rc=1
    done
    ;;
stack)
    BASE_URL=${BASE_URL:-http://127.0.0.1:8000}
    BASE_URL=${BASE_URL%/}
    require_local_url "$BASE_URL"
    body=$TMP/order.json
    printf '{"customer_id":"oha-cust-%s","product_id":"oha-prod-%s","quantity":2,"total_amount":"39.98"}' $$ $$ >"$body"
    curl -sf --max-time 5 -o /dev/null -X POST "$BASE_URL/order/orders" -H 'content-type: application/json' \
        --data-binary @"$body" || die "POST $BASE_URL/order/orders failed: is the stack running (cargo run --release --bin stack)?"
    log "POST $BASE_URL/order/orders (-c $CONNS -z $DURATION)"
    timeout 3600 oha --no-tui --output-format json -c "$CONNS" -z "$DURATION" -m POST \
        -T application/json -D "$body" "$BASE_URL/order/orders" >"$TMP/post-orders.json"
    python3 "$HERE/summarize.py" "$TMP/post-orders.json" --label "POST /order/orders" --expect 201 \
        --max-error-pct "$MAX_ERROR_PCT" || rc=1
    ;;
*) die "MODE must be stack or bench" ;;
esac
exit $rc
