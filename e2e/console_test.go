package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/tandem-sync/tandem/internal/fakes/stripefake"
)

// updateScreenshots rewrites docs/console.png and docs/console-user.png
// (the README shows them); otherwise the screenshots go to a scratch
// directory.
var updateScreenshots = flag.Bool("screenshots", false, "write the console screenshots to docs/")

// The console in a real headless Chromium, against the real processes: an
// operator signs in, a user fails (the sandbox refuses its email), the
// failed count and the user appear on the open page without a reload, its
// history says why, and after the cause is fixed the resync button gets it
// synced, which the page shows live.
func TestConsoleInBrowser(t *testing.T) {
	skipShort(t)
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("the console test needs Debian's chromium (make test installs it: apt-get install -y chromium): %v", err)
	}
	shots := t.TempDir()
	if *updateScreenshots {
		shots = filepath.Join("..", "docs")
	}
	s := newSystem(t, options{})
	s.sb.Fake.SetFaults(stripefake.Faults{RejectEmailDomain: "blocked.example"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 860))...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	base := "http://" + s.api.addr
	poll := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(60*time.Second))
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatalf("screenshot: %v", err)
		}
	}

	// A wrong token: the sign-in page again, nothing else.
	if err := chromedp.Do(bctx,
		chromedp.Navigate(base+"/console/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "not-a-token"),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("signin-error")),
	); err != nil {
		t.Fatalf("signing in with a wrong token: %v", err)
	}
	// Sign in; the page goes live; mark it so that a reload would show.
	if err := chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.ID("token"), apiToken),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("providers")),
		poll(`document.getElementById("live").classList.contains("on")`),
		chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`),
	); err != nil {
		t.Fatalf("signing in: %v", err)
	}
	if got, err := chromedp.Run(bctx, chromedp.Text(chromedp.ID("failed-stripe"))); err != nil || got != "0" {
		t.Fatalf("failed count before: %q, %v", got, err)
	}

	status, body, err := s.client.call(ctx, "POST", "/v1/users", map[string]any{"email": "ada@blocked.example", "name": "Ada Lovelace"})
	if err != nil || status != 201 {
		t.Fatalf("creating the user: %d %s %v", status, body, err)
	}
	var u apiUser
	if err := json.Unmarshal(body, &u); err != nil {
		t.Fatal(err)
	}
	row := `tr[data-user="` + u.ID + `"]`
	if err := chromedp.Do(bctx,
		poll(`document.getElementById("failed-stripe").textContent === "1" && document.querySelector('`+row+`') !== null`),
	); err != nil {
		t.Fatalf("the failed user did not appear on the open page: %v", err)
	}
	if ok, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`window.notReloaded === true`)); err != nil || !ok {
		t.Fatalf("the page was reloaded (%v)", err)
	}
	reason, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(row+" td.reason")))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("attention reason: %s", reason)
	shot("console.png")

	// Its page: the history says why.
	if err := chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(row+" a")),
		chromedp.WaitVisible(chromedp.ID("history")),
		poll(`document.getElementById("history").textContent.includes("Invalid email address")`),
		poll(`document.getElementById("status-stripe").textContent === "failed"`),
	); err != nil {
		t.Fatalf("the user's page: %v", err)
	}

	// The cause is fixed (the sandbox takes the domain again); resync.
	s.sb.Fake.SetFaults(stripefake.Faults{})
	// The button posts the form and the answer redirects to the same page:
	// wait for that load before marking the page.
	if _, err := chromedp.Run(bctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.ID("resync-stripe")))); err != nil {
		t.Fatalf("pressing resync: %v", err)
	}
	if err := chromedp.Do(bctx,
		chromedp.WaitVisible(chromedp.ID("history")),
		chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`),
		poll(`document.getElementById("status-stripe").textContent === "synced"`),
		poll(`document.getElementById("history").textContent.includes("resync")`),
	); err != nil {
		t.Fatalf("after the resync the page never showed the user synced: %v", err)
	}
	if ok, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`window.notReloaded === true`)); err != nil || !ok {
		t.Fatalf("the user page was reloaded (%v)", err)
	}
	shot("console-user.png")
	// The same page on a phone's screen.
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile)); err != nil {
		t.Fatalf("phone viewport: %v", err)
	}
	shot("console-phone.png")
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 860)); err != nil {
		t.Fatalf("laptop viewport: %v", err)
	}
	if n := len(s.sb.Fake.CustomersWithMetadata("tandem_user_id", u.ID)); n != 1 {
		t.Fatalf("the sandbox holds %d customers of the user, want 1", n)
	}
	got, _, err := s.client.getUser(ctx, u.ID)
	if err != nil || got.Sync[provider].Status != "synced" {
		t.Fatalf("the API says %+v (%v)", got.Sync, err)
	}

	// Sign out: the sign-in page.
	if err := chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`form[action="/console/sign-out"] button`)),
		chromedp.WaitVisible(chromedp.ID("token")),
	); err != nil {
		t.Fatalf("signing out: %v", err)
	}
	t.Logf("screenshots in %s (%s)", shots, strconv.Quote("-screenshots writes docs/"))
}
