#!/usr/bin/env python3
"""Drives headless Chromium over the DevTools protocol against shardgate's web dashboard.

Usage: cdp.py DEVTOOLS_PORT ADMIN_URL USER PASSWORD SCREENSHOT.png
       cdp.py DEVTOOLS_PORT ADMIN_URL USER PASSWORD SCREENSHOT.png queue RETRY_ID DELETE_ID

Checks an API call without a token is refused (from the page itself), logs in through the
login form, waits for live data, waits for the HTTP request total to grow while the caller
drives traffic, takes a 1280x900 screenshot, and prints one JSON object with what it saw.

With `queue`: after logging in, presses Retry on the RETRY_ID row of the mail queue table,
Delete then Confirm delete on the DELETE_ID row, opens RETRY_ID's log lines through its
correlation id, takes the screenshot and prints what it saw.
"""
import base64
import json
import sys
import time
import urllib.request

import websocket  # Debian python3-websocket (websocket-client)


class Page:
    def __init__(self, devtools_port):
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{devtools_port}/json/list", timeout=10))
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def eval(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for: {expression}")


def queue_actions(page, retry_id, delete_id):
    """Retry and delete through the queue table's buttons; what the page showed."""
    seen = {}
    row = lambda id: f"document.querySelector('#queue tr[data-id=\"{id}\"]')"
    page.wait_for(f"!!{row(retry_id)} && !!{row(delete_id)}", 30)
    seen["queue_count_before"] = page.eval("document.getElementById('queue-count').textContent")
    seen["retry_conn"] = page.eval(f"{row(retry_id)}.cells[1].textContent")
    page.eval(f"{row(retry_id)}.querySelector('button.retry').click(); true")
    page.wait_for(f"document.getElementById('queue-notice').textContent === 'retrying {retry_id} now'", 15)
    seen["retry_notice"] = page.eval("document.getElementById('queue-notice').textContent")
    # The first press only arms the button; the second deletes.
    page.eval(f"{row(delete_id)}.querySelector('button.delete').click(); true")
    page.wait_for(f"{row(delete_id)} && {row(delete_id)}.querySelector('button.delete').textContent === 'Confirm delete'", 15)
    seen["still_listed_after_first_press"] = page.eval(f"!!{row(delete_id)}")
    page.eval(f"{row(delete_id)}.querySelector('button.delete').click(); true")
    page.wait_for(f"document.getElementById('queue-notice').textContent === '{delete_id} deleted' && !{row(delete_id)}", 15)
    seen["delete_notice"] = page.eval("document.getElementById('queue-notice').textContent")
    seen["queue_count_after"] = page.eval("document.getElementById('queue-count').textContent")
    # The correlation id opens the message's log lines (session and delivery).
    page.eval(f"{row(retry_id)}.querySelector('button.story').click(); true")
    page.wait_for("!document.getElementById('story-section').classList.contains('hidden')", 15)
    seen["story_id"] = page.eval("document.getElementById('story-id').textContent")
    seen["story"] = page.eval("document.getElementById('story').textContent")
    return seen


def main():
    devtools_port, admin_url, user, password, screenshot = sys.argv[1:6]
    queue = sys.argv[8:9] and sys.argv[6] == "queue"
    page = Page(devtools_port)
    page.call("Page.enable")
    page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    page.call("Page.navigate", url=admin_url + "/")
    page.wait_for("document.readyState === 'complete' && !!document.getElementById('login')", 30)
    seen = {}
    seen["unauthenticated_stats"] = page.eval("fetch('/api/stats').then(r => r.status)")
    seen["unauthenticated_config"] = page.eval("fetch('/api/config').then(r => r.status)")
    seen["unauthenticated_retry"] = page.eval("fetch('/api/queue/retry', {method: 'POST'}).then(r => r.status)")
    page.eval(
        f"document.getElementById('username').value = {json.dumps(user)};"
        f"document.getElementById('password').value = {json.dumps(password)};"
        "document.getElementById('login-button').click(); true"
    )
    if queue:
        seen.update(queue_actions(page, sys.argv[7], sys.argv[8]))
        shot = page.call("Page.captureScreenshot", format="png")
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(json.dumps(seen))
        return
    page.wait_for("document.querySelector('#shards tbody').rows.length > 0", 30)
    seen["dashboard_visible"] = page.eval("!document.getElementById('dashboard').classList.contains('hidden')")
    seen["http_total_first"] = int(page.eval("document.getElementById('http-total').textContent"))
    page.wait_for(
        f"Number(document.getElementById('http-total').textContent) > {seen['http_total_first']} && "
        "document.getElementById('http-rate').textContent !== '-'",
        40,
    )
    # Let the chart collect a few points while traffic continues.
    time.sleep(3)
    seen["http_total_later"] = int(page.eval("document.getElementById('http-total').textContent"))
    seen["http_rate"] = page.eval("document.getElementById('http-rate').textContent")
    seen["latency_rows"] = page.eval("[...document.querySelectorAll('#latency tbody tr')].map(r => r.cells[0].textContent)")
    seen["status"] = page.eval("document.getElementById('status').textContent")
    shot = page.call("Page.captureScreenshot", format="png")
    with open(screenshot, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
