package factory_test

import (
	"context"
	"fmt"

	"github.com/tandem-sync/tandem/internal/config"
	"github.com/tandem-sync/tandem/internal/factory"
	"github.com/tandem-sync/tandem/internal/integrations"
)

// Echo is a toy provider: it "creates" remote objects named after the user.
type Echo struct{ prefix string }

func (e *Echo) Name() string { return "echo" }

func (e *Echo) Upsert(_ context.Context, c integrations.Customer, link integrations.Link) (integrations.Result, error) {
	id := link.RemoteID
	if id == "" {
		id = e.prefix + c.UserID
	}
	return integrations.Result{RemoteID: id, MetadataKeys: []string{}}, nil
}

func (e *Echo) Delete(context.Context, integrations.Customer, integrations.Link) error { return nil }

// A new provider is one package implementing integrations.Provider and one
// Register line; its settings are the ECHO_* variables.
func ExampleRegistry_Register() {
	r := factory.New()
	r.Register("echo", func(s config.Settings, _ factory.Deps) (integrations.Provider, error) {
		prefix, err := s.Required("prefix") // ECHO_PREFIX
		if err != nil {
			return nil, err
		}
		return &Echo{prefix: prefix}, nil
	})
	fmt.Println(r.Names())

	cfg, err := config.Load([]string{"TANDEM_CONFIG=", "ECHO_PREFIX=echo_"}, r.Names())
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := r.Build("echo", cfg, factory.Deps{})
	if err != nil {
		fmt.Println(err)
		return
	}
	res, _ := p.Upsert(context.Background(), integrations.Customer{UserID: "u1"}, integrations.Link{})
	fmt.Println(p.Name(), res.RemoteID)

	_, err = r.Build("hubspot", cfg, factory.Deps{})
	fmt.Println(err)
	// Output:
	// [echo salesforce stripe]
	// echo echo_u1
	// unknown provider "hubspot" (known: echo, salesforce, stripe)
}
