// Command ssa is the benchmark's ceiling: a minimal client that does nothing but server-side
// apply a list of objects, with a fixed number of requests in flight over one HTTP/2 connection.
// It has no discovery, no dry-run, no diff, no inventory and no status; `make bench` compares
// gitopsd against it to show how close a full sync gets to what the API server can take.
//
// Input is a JSON job file written by bench/bench_sync.py:
//
//	{"server": "...", "ca": "PEM", "cert": "PEM", "key": "PEM", "token": "",
//	 "inflight": 32, "requests": [{"path": "/api/v1/namespaces/ns/configmaps/x", "body": "{...}"}]}
//
// It prints one JSON line: {"wall": seconds, "requests": n, "errors": n, "firstError": "..."}.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

type request struct {
	Path string `json:"path"`
	Body string `json:"body"`
}

type job struct {
	Server   string    `json:"server"`
	CA       string    `json:"ca"`
	Cert     string    `json:"cert"`
	Key      string    `json:"key"`
	Token    string    `json:"token"`
	Inflight int       `json:"inflight"`
	Requests []request `json:"requests"`
}

func client(j job) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if j.CA != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(j.CA)) {
			return nil, fmt.Errorf("no certificate in the CA data")
		}
		cfg.RootCAs = pool
	}
	if j.Cert != "" {
		pair, err := tls.X509KeyPair([]byte(j.Cert), []byte(j.Key))
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: j.Inflight}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: ssa JOB.json")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var j job
	if err := json.Unmarshal(raw, &j); err != nil {
		fmt.Fprintln(os.Stderr, "job:", err)
		os.Exit(1)
	}
	if j.Inflight <= 0 {
		j.Inflight = 32
	}
	c, err := client(j)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tls:", err)
		os.Exit(1)
	}
	var errors atomic.Int64
	var firstErr atomic.Value
	work := make(chan request)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < j.Inflight; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				url := j.Server + r.Path + "?fieldManager=ssa-ceiling&force=true"
				req, _ := http.NewRequest(http.MethodPatch, url, bytes.NewBufferString(r.Body))
				req.Header.Set("Content-Type", "application/apply-patch+yaml")
				req.Header.Set("Accept", "application/json")
				if j.Token != "" {
					req.Header.Set("Authorization", "Bearer "+j.Token)
				}
				resp, err := c.Do(req)
				if err != nil {
					errors.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 300 {
					errors.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: HTTP %d: %.300s", r.Path, resp.StatusCode, body))
				}
			}
		}()
	}
	for _, r := range j.Requests {
		work <- r
	}
	close(work)
	wg.Wait()
	out := map[string]any{
		"wall":     time.Since(start).Seconds(),
		"requests": len(j.Requests),
		"errors":   errors.Load(),
	}
	if e := firstErr.Load(); e != nil {
		out["firstError"] = e
	}
	enc, _ := json.Marshal(out)
	fmt.Println(string(enc))
}
