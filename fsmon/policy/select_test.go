package policy

import (
	"strings"
	"testing"
)

func TestSelects(t *testing.T) {
	const id = "4f1b8c2d9e3a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c"
	web := Target{Name: "web-1", ID: id, Image: "nginx:1.27"}
	other := Target{Name: "db", ID: strings.Repeat("a", 64), Image: "postgres:17"}
	host := Target{Host: true}
	// Two pods' containers of the same pod-spec name and image, and a
	// container without a pod or an image.
	api := Target{Name: "app", ID: strings.Repeat("b", 64), Image: "registry/app:2", Namespace: "prod", Pod: "api-7d9f",
		Labels: map[string]string{"app": "api", "app.kubernetes.io/part-of": "shop", "tier": ""}}
	batch := Target{Name: "app", ID: strings.Repeat("c", 64), Image: "registry/app:2", Namespace: "batch", Pod: "job-1",
		Labels: map[string]string{"app": "job"}}
	bare := Target{Name: "tmp", ID: strings.Repeat("d", 64)}
	for _, tc := range []struct {
		profile string
		yes, no []Target
	}{
		{"{}", []Target{host, web, other}, nil},
		{"{host: true}", []Target{host}, []Target{web, other}},
		{"{containers: {name: 'web-*'}}", []Target{web}, []Target{host, other}},
		{"{host: true, containers: {name: 'web-*'}}", []Target{host, web}, []Target{other}},
		{"{containers: {id: '" + id + "'}}", []Target{web}, []Target{host, other}},
		{"{containers: {id: '" + id[:12] + "'}}", []Target{web}, []Target{host, other}},
		{"{containers: {id: '4f1b*'}}", []Target{web}, []Target{host, other}},
		{"{containers: {id: '" + id[:11] + "'}}", nil, []Target{host, web, other}},
		{"{containers: {image: 'nginx:*'}}", []Target{web}, []Target{host, other}},
		{"{containers: {name: 'web-*', image: 'postgres:*'}}", nil, []Target{host, web, other}},
		{"{containers: {name: 'db', image: 'postgres:*'}}", []Target{other}, []Target{host, web}},
		{"{containers: {image: '*'}}", []Target{web, other}, []Target{host, bare, api}}, // * does not cross /
		{"{containers: {image: '*/*'}}", []Target{api, batch}, []Target{host, bare, web}},
		{"{containers: {name: '*'}}", []Target{web, other, api, batch, bare}, []Target{host}},
		{"{containers: {namespace: prod}}", []Target{api}, []Target{host, web, other, batch, bare}},
		{"{containers: {namespace: '*'}}", []Target{api, batch}, []Target{host, web, other, bare}},
		{"{containers: {pod: 'api-*'}}", []Target{api}, []Target{host, web, batch, bare}},
		{"{containers: {namespace: prod, pod: 'job-*'}}", nil, []Target{host, web, api, batch, bare}},
		{"{containers: {labels: {app: api}}}", []Target{api}, []Target{host, web, batch, bare}},
		{"{containers: {labels: {app: '*'}}}", []Target{api, batch}, []Target{host, web, bare}},
		{"{containers: {labels: {app: 'ap'}}}", nil, []Target{api, batch}},
		{"{containers: {labels: {app: api, app.kubernetes.io/part-of: shop}}}", []Target{api}, []Target{batch}},
		{"{containers: {labels: {app: api, app.kubernetes.io/part-of: other}}}", nil, []Target{api, batch}},
		{"{containers: {labels: {tier: ''}}}", []Target{api}, []Target{batch, bare}},
		{"{containers: {labels: {tier: '*'}}}", []Target{api}, []Target{batch, bare}},
		{"{containers: {name: app, labels: {app: job}}}", []Target{batch}, []Target{api}},
		{"{containers: {namespace: batch, image: 'registry/*'}}", []Target{batch}, []Target{api, web}},
	} {
		extra := strings.TrimSuffix(strings.TrimPrefix(tc.profile, "{"), "}")
		if extra != "" {
			extra = ", " + extra
		}
		cfg, err := Parse("t.yaml", []byte("profiles:\n  - {name: p, filters: [{path: /f}]"+extra+"}\n"))
		if err != nil {
			t.Fatalf("%s: %v", tc.profile, err)
		}
		p, err := Compile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range tc.yes {
			if !p.Profiles[0].Selects(tg) || len(p.RulesFor(tg)) != 1 {
				t.Errorf("%s does not select %+v", tc.profile, tg)
			}
		}
		for _, tg := range tc.no {
			if p.Profiles[0].Selects(tg) || len(p.RulesFor(tg)) != 0 {
				t.Errorf("%s selects %+v", tc.profile, tg)
			}
		}
	}
}

func TestShortID(t *testing.T) {
	if ShortID("abc") != "abc" || ShortID(strings.Repeat("x", 13)) != strings.Repeat("x", 12) {
		t.Fatal("ShortID")
	}
}
