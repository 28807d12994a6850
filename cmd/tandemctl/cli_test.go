package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestUsageExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "usage: tandemctl"},
		{[]string{"help"}, exitOK, "commands:"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, nil, strings.NewReader(""), &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("tandemctl %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("tandemctl %v wrote to stdout: %q", tc.args, out.String())
		}
	}
}
