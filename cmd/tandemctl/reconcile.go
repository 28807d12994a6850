package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/tandem-sync/tandem/internal/integrations"
	"github.com/tandem-sync/tandem/internal/reconcile"
)

func reconcileCommand() command {
	return command{
		name:    "reconcile",
		args:    "-provider P [-repair [-prefer remote] [-import]]",
		summary: "compare every linked user with its remote object (listed in pages); report drift, unlinked and missing objects; -repair settles them",
		setup: func(fs *flag.FlagSet) func(ctx context.Context, e *env) error {
			provider := fs.String("provider", "", "the provider to compare with (required)")
			repair := fs.Bool("repair", false, "push Tandem's state over drifted objects, and relink or recreate missing ones")
			prefer := fs.String("prefer", "tandem", "with -repair: whose state wins on drift, tandem (pushed to the provider) or remote (applied locally by the inbound rules)")
			imp := fs.Bool("import", false, "with -repair: make users of remote objects no user has (by the inbound rules: linked to the user with their email, or created)")
			return func(ctx context.Context, e *env) error {
				return runReconcile(ctx, e, *provider, *repair, *prefer, *imp)
			}
		},
	}
}

func runReconcile(ctx context.Context, e *env, provider string, repair bool, prefer string, imp bool) error {
	switch {
	case len(e.args) > 0:
		return usagef("unexpected argument %q", e.args[0])
	case prefer != "tandem" && prefer != "remote":
		return usagef("-prefer must be tandem or remote, not %q", prefer)
	case !repair && (prefer == "remote" || imp):
		return usagef("-prefer remote and -import need -repair")
	}
	p, err := e.provider(provider)
	if err != nil {
		return err
	}
	lister, ok := p.(integrations.Lister)
	if !ok {
		return fmt.Errorf("provider %s cannot list its objects: reconcile is not available for it", provider)
	}
	fetcher, _ := p.(integrations.WebhookReceiver)
	st, err := e.store(ctx)
	if err != nil {
		return err
	}
	bar := e.progress(-1, "listing "+provider+" objects")
	rep, err := reconcile.Run(ctx, st, reconcile.Options{
		Provider: provider, Lister: lister, Fetcher: fetcher,
		Repair: repair, PreferRemote: prefer == "remote", Import: imp,
		Progress: func(n int) { _ = bar.Set(n) },
	})
	_ = bar.Finish()
	if err != nil {
		return err
	}
	if err := e.result(rep, func(w io.Writer) { printReconcile(w, rep, repair) }); err != nil {
		return err
	}
	if len(rep.Failures) > 0 {
		return fmt.Errorf("%d repairs failed (listed in the report)", len(rep.Failures))
	}
	return nil
}

// maxListed is how many entries of each list the human summary shows.
const maxListed = 20

func printReconcile(w io.Writer, rep reconcile.Report, repair bool) {
	fmt.Fprintf(w, "%s: %d objects listed in %d requests; %d linked users checked: %d in sync, %d drifted, %d missing, %d with a push owed (not compared); %d objects belong to no user\n",
		rep.Provider, rep.Listed, rep.Pages, rep.Checked, rep.InSync, len(rep.Drift), len(rep.MissingRemote), rep.Unsettled, len(rep.UnlinkedRemote))
	for i, d := range rep.Drift {
		if i == maxListed {
			fmt.Fprintf(w, "  … and %d more drifted (-json lists them all)\n", len(rep.Drift)-i)
			break
		}
		fmt.Fprintf(w, "  drift   user %s  %s  %s\n", d.UserID, d.RemoteID, strings.Join(d.Fields, ","))
	}
	for i, m := range rep.MissingRemote {
		if i == maxListed {
			fmt.Fprintf(w, "  … and %d more missing\n", len(rep.MissingRemote)-i)
			break
		}
		fmt.Fprintf(w, "  missing user %s  %s\n", m.UserID, m.RemoteID)
	}
	for i, u := range rep.UnlinkedRemote {
		if i == maxListed {
			fmt.Fprintf(w, "  … and %d more belong to no user\n", len(rep.UnlinkedRemote)-i)
			break
		}
		fmt.Fprintf(w, "  no user %s  %s\n", u.RemoteID, u.Email)
	}
	if repair {
		fmt.Fprintf(w, "repaired %d", rep.Repaired)
		if rep.Imported != nil {
			fmt.Fprintf(w, " (import: %v)", rep.Imported)
		}
		fmt.Fprintln(w)
		for _, f := range rep.Failures {
			fmt.Fprintf(w, "  failed  %s %s: %s\n", f.UserID, f.RemoteID, f.Error)
		}
	}
}
