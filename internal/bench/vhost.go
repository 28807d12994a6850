package bench

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Vhost creates a scratch RabbitMQ vhost through the management API mgmt
// (http://user:pass@host:15672) and returns an AMQP URL for it, based on
// amqpURL, and a func that deletes it.
func Vhost(mgmt, amqpURL string) (string, func(), error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "tandem-bench-" + hex.EncodeToString(b)
	au, err := url.Parse(amqpURL)
	if err != nil {
		return "", nil, err
	}
	call := func(method, path, body string) error {
		mu, err := url.Parse(mgmt)
		if err != nil {
			return err
		}
		req, err := http.NewRequest(method, strings.TrimSuffix(mu.Scheme+"://"+mu.Host, "/")+path, strings.NewReader(body))
		if err != nil {
			return err
		}
		if mu.User != nil {
			pw, _ := mu.User.Password()
			req.SetBasicAuth(mu.User.Username(), pw)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("RabbitMQ management API (is rabbitmq_management enabled?): %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("RabbitMQ management API %s %s: %s", method, path, resp.Status)
		}
		return nil
	}
	vpath := "/api/vhosts/" + url.PathEscape(name)
	if err := call(http.MethodPut, vpath, ""); err != nil {
		return "", nil, err
	}
	perm := "/api/permissions/" + url.PathEscape(name) + "/" + url.PathEscape(au.User.Username())
	if err := call(http.MethodPut, perm, `{"configure":".*","write":".*","read":".*"}`); err != nil {
		_ = call(http.MethodDelete, vpath, "")
		return "", nil, err
	}
	au.Path = "/" + name
	au.RawPath = "/" + url.PathEscape(name)
	return au.String(), func() { _ = call(http.MethodDelete, vpath, "") }, nil
}
