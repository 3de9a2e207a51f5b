"""Drives headless Chromium through the metrics form like an engineer would.

Usage: metrics_form.py BASE_URL SCREENSHOT_DIR TOKEN READ_TOKEN
Signs in with TOKEN (scopes activities:write and activities:read), records work, checks a
cross-site post is refused, then lists nodes in Swagger UI authorized with READ_TOKEN.
Exits non-zero, saying what was wrong, if anything does not behave.
"""

import datetime
import http.server
import os
import sys
import threading

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, SHOTS, TOKEN, READ_TOKEN = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
os.makedirs(SHOTS, exist_ok=True)
os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything

options = Options()
options.binary_location = os.environ.get("ENC_TEST_CHROMIUM", "/usr/bin/chromium")
for arg in (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1100,1000",
):
    options.add_argument(arg)
service = Service(os.environ.get("ENC_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
driver = webdriver.Chrome(service=service, options=options)
# Generous: on a 2-core CI machine the browser shares the cores with the whole suite. A wait
# ends as soon as its condition holds.
wait = WebDriverWait(driver, 45)


def check(condition, what):
    if not condition:
        driver.save_screenshot(os.path.join(SHOTS, "failure.png"))
        sys.exit(f"browser: {what} (page: {driver.current_url})")


def field(name):
    return driver.find_element(By.ID, name)


def type_into(name, text):
    element = field(name)
    element.clear()
    element.send_keys(text)


try:
    # The report needs a session: without one the browser is sent to sign in.
    driver.get(f"{BASE}/metrics-form/report")
    check(driver.current_url.endswith("/sign-in"), "an unsigned-in visit to the report asks to sign in")
    type_into("token", "enc_nobody_" + "x" * 43)
    driver.find_element(By.CSS_SELECTOR, "form[action='/sign-in'] button").click()
    problems = wait.until(ec.visibility_of_element_located((By.ID, "problems")))
    check("Not signed in" in problems.text, f"a wrong token is refused: {problems.text!r}")
    type_into("token", TOKEN)
    driver.save_screenshot(os.path.join(SHOTS, "00-sign-in.png"))
    driver.find_element(By.CSS_SELECTOR, "form[action='/sign-in'] button").click()
    wait.until(ec.url_contains("/metrics-form"))
    cookie = driver.get_cookie("enc_session")
    check(cookie is not None and cookie.get("httpOnly") and cookie.get("sameSite") == "Strict",
          f"the session cookie is HttpOnly and SameSite=Strict: {cookie}")

    driver.get(f"{BASE}/metrics-form")
    # enc's day is UTC's; read the date the form offers so midnight cannot race the check.
    today = field("date").get_attribute("value")
    utc_today = datetime.datetime.now(datetime.timezone.utc).date()
    check(abs((datetime.date.fromisoformat(today) - utc_today).days) <= 1, f"the date defaults to today, not {today}")
    type_into("engineer", "dana")
    type_into("customer", "Browser Co")
    type_into("project", "Rollout")
    Select(field("activity_type")).select_by_value("deployment")
    type_into("hours", "3.25")
    type_into("description", "Rolled out the new release")
    driver.save_screenshot(os.path.join(SHOTS, "01-filled.png"))
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    saved = wait.until(ec.visibility_of_element_located((By.ID, "saved")))
    expected = f"Saved: 3.25 h of deployment for Browser Co / Rollout by dana on {today}."
    check(saved.text == expected, f"confirmation {saved.text!r}, expected {expected!r}")
    driver.save_screenshot(os.path.join(SHOTS, "02-saved.png"))

    # An invalid entry: no engineer, a fifth of an hour.
    type_into("engineer", "")
    type_into("hours", "0.2")
    type_into("description", "kept across the error")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.visibility_of_element_located((By.ID, "problems")))
    check("Engineer is required" in field("engineer-error").text, "engineer error shown by its field")
    check("steps of 0.25" in field("hours-error").text, "hours error shown by its field")
    check(field("engineer").get_attribute("aria-invalid") == "true", "engineer marked invalid")
    check(field("customer").get_attribute("value") == "Browser Co", "customer kept")
    check(field("hours").get_attribute("value") == "0.2", "hours kept")
    check(field("description").get_attribute("value") == "kept across the error", "description kept")
    check(len(driver.find_elements(By.ID, "saved")) == 0, "no confirmation for an invalid entry")
    driver.save_screenshot(os.path.join(SHOTS, "03-invalid.png"))

    driver.get(f"{BASE}/metrics-form/report")
    rows = driver.find_elements(By.CSS_SELECTOR, "#by-customer tbody tr")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    check(["Browser Co", "3.25", "1"] in cells, f"the report counts the entry: {cells}")
    bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart rect")
    check(len(bars) >= 1, "the chart has a bar")
    csv_link = driver.find_element(By.PARTIAL_LINK_TEXT, "CSV")
    check("/metrics-form/entries.csv?" in csv_link.get_attribute("href"), "the report links to the CSV")
    driver.save_screenshot(os.path.join(SHOTS, "04-report.png"))

    # Another site's page posting to the form: refused, nothing saved.
    hostile = (
        "data:text/html,<form id=f method=post action='" + BASE + "/metrics-form'>"
        "<input name=engineer value=mallory><input name=customer value='Cross Site Co'>"
        "<input name=project value=x><input name=activity_type value=other>"
        "<input name=hours value=1></form><script>document.getElementById('f').submit()</script>"
    )
    driver.get(hostile)
    wait.until(lambda d: d.current_url.startswith(BASE))
    check(len(driver.find_elements(By.ID, "saved")) == 0, "a cross-site post is not saved")
    driver.save_screenshot(os.path.join(SHOTS, "06-cross-site.png"))

    # Swagger UI: Authorize with a bearer token, then try an operation that needs it.
    driver.get(f"{BASE}/swagger-ui/")
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button.authorize"))).click()
    secret = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".auth-container input")))
    secret.send_keys(READ_TOKEN)
    driver.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.authorize").click()
    driver.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.btn-done").click()
    operation = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-nodes-list_nodes .opblock-summary")))
    operation.click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-nodes-list_nodes .try-out__btn"))).click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-nodes-list_nodes button.execute"))).click()
    status = wait.until(ec.visibility_of_element_located(
        (By.CSS_SELECTOR, "#operations-nodes-list_nodes .live-responses-table tbody .response-col_status")))
    check(status.text.strip().startswith("200"), f"Swagger UI's authorized call answers 200, not {status.text!r}")
    driver.save_screenshot(os.path.join(SHOTS, "07-swagger-authorized.png"))

    # A free-text group name typed into Swagger UI reaches enc percent-encoded and back.
    op = "#operations-node_groups-get_node_group"
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"{op} .opblock-summary"))).click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"{op} .try-out__btn"))).click()
    name = wait.until(ec.visibility_of_element_located(
        (By.CSS_SELECTOR, f"{op} tr[data-param-name='node_group_name'] input")))
    name.clear()
    name.send_keys("All Nodes (EU) #1?")
    driver.find_element(By.CSS_SELECTOR, f"{op} button.execute").click()
    status = wait.until(ec.visibility_of_element_located(
        (By.CSS_SELECTOR, f"{op} .live-responses-table tbody .response-col_status")))
    check(status.text.strip().startswith("200"), f"Swagger UI reads the group by name, not {status.text!r}")
    url = driver.find_element(By.CSS_SELECTOR, f"{op} .request-url pre").text
    check("All%20Nodes%20%28EU%29%20%231%3F" in url, f"Swagger UI sent the name percent-encoded: {url}")
    body = driver.find_element(By.CSS_SELECTOR, f"{op} .live-responses-table .response-col_description pre").text
    check('"All Nodes (EU) #1?"' in body, f"the group comes back by its name: {body[:200]}")
    driver.save_screenshot(os.path.join(SHOTS, "08-swagger-group-by-name.png"))

    # The page's one inline style is allowed by its hash in the Content-Security-Policy:
    # drawn, not blocked (the page's background is the style's --bg).
    driver.get(f"{BASE}/metrics-form")
    background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    check(background == "rgb(244, 246, 250)", f"the page's style applies under its policy ({background})")
    # Another site cannot frame the form (frame-ancestors 'none', X-Frame-Options: DENY).
    # The other site is a page served from another origin of this machine (a data: page's
    # frames are refused by the browser whatever enc says, so it would prove nothing).
    framing = (f"<!DOCTYPE html><iframe id=framed width=600 height=400 src='{BASE}/metrics-form'>"
               "</iframe>").encode()

    class Framing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(framing)))
            self.end_headers()
            self.wfile.write(framing)

        def log_message(self, *args):
            pass

    other_site = http.server.HTTPServer(("localhost", 0), Framing)
    threading.Thread(target=other_site.serve_forever, daemon=True).start()
    driver.get(f"http://localhost:{other_site.server_address[1]}/")

    def framed(d):
        """What the frame shows once it has loaded: the form, or the browser's refusal."""
        d.switch_to.default_content()
        d.switch_to.frame(d.find_element(By.ID, "framed"))
        if d.find_elements(By.ID, "engineer"):
            return "the form"
        if d.execute_script("return location.href").startswith("chrome-error:"):
            return "refused"
        return False

    shown = wait.until(framed)
    driver.switch_to.default_content()
    check(shown == "refused", f"another site framed the form: the frame shows {shown}")

    driver.set_window_size(390, 900)
    driver.get(f"{BASE}/metrics-form")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    check(width <= 390, f"no sideways scrolling on a phone (page is {width}px wide)")
    driver.save_screenshot(os.path.join(SHOTS, "05-phone.png"))
finally:
    driver.quit()
print("browser: the form, its errors and the report behave")
