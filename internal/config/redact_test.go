package config_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-sync/tandem/internal/config"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"amqp://guest:s3cret@127.0.0.1:5672/":             "amqp://guest:xxxxx@127.0.0.1:5672/",
		"amqp://127.0.0.1:5672/vh":                        "amqp://127.0.0.1:5672/vh",
		"amqp://guest@127.0.0.1/":                         "amqp://guest@127.0.0.1/",
		"https://h.example/webhook?token=s3cret&x=1":      "https://h.example/webhook?token=xxxxx&x=1",
		"amqp://guest:pa%zzs3cret@127.0.0.1:5672/":        "amqp://xxxxx@127.0.0.1:5672/",
		"amqp://guest:pa#s3cret@127.0.0.1:5672/?x=s3cret": "amqp://xxxxx@127.0.0.1:5672/",
		"http://[::1:s3cret":                              "http://[::1:s3cret", // no credentials to find
	} {
		require.Equal(t, want, config.RedactURL(in), in)
	}
}
