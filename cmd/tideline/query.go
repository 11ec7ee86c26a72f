package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"tideline/internal/httpauth"
	"time"

	"github.com/spf13/cobra"

	"tideline/lake"
	"tideline/serve"
)

func queryCmd() *cobra.Command {
	var c commonFlags
	var l lakeFlags
	var server, tokenFile, format string
	var local bool
	cmd := &cobra.Command{
		Use:   `query "SQL"`,
		Short: "Run one read-only SELECT against a running serve, or the lake directly with --local",
		Example: `  tideline query "SELECT window_start, merchant_id, payments, source FROM merchant_minute ORDER BY window_start DESC LIMIT 10"
  tideline query --format csv "SELECT * FROM corrections_merchant_minute"
  tideline query --local "SELECT count(*) FROM raw_payments"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "table" && format != "csv" && format != "json" {
				return fmt.Errorf("cannot print --format %q: use table, csv or json", format)
			}
			var res *serve.Result
			var err error
			if local {
				res, err = queryLocal(cmd, &c, &l, args[0])
			} else {
				var token string
				if token, err = httpauth.Secret(tokenFile); err != nil {
					return err
				}
				res, err = queryServer(server, token, args[0])
			}
			if err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), res, format)
		},
	}
	f := cmd.Flags()
	c.register(f)
	l.register(f)
	f.StringVar(&server, "server", envOr("TIDELINE_SERVER", "http://127.0.0.1:8080"), "the serve process's URL (env TIDELINE_SERVER)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the serve process's bearer token (env "+httpauth.EnvFile+", or the token itself in "+httpauth.Env+")")
	f.StringVar(&format, "format", "table", "output: table, csv or json")
	f.BoolVar(&local, "local", false, "read the lake directly (batch results only, no speed layer) instead of asking serve")
	return cmd
}

func queryServer(server, token, sql string) (*serve.Result, error) {
	body, _ := json.Marshal(map[string]string{"sql": sql})
	req, err := http.NewRequest("POST", strings.TrimRight(server, "/")+"/v1/query", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("cannot use --server %q: %w", server, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach serve at %s: %w; is `tideline serve` running, or use --local", server, err)
	}
	defer resp.Body.Close()
	d := json.NewDecoder(resp.Body)
	d.UseNumber()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = d.Decode(&e)
		return nil, fmt.Errorf("serve answered %s: %s", resp.Status, e.Error)
	}
	var res serve.Result
	if err := d.Decode(&res); err != nil {
		return nil, fmt.Errorf("cannot read serve's answer: %w", err)
	}
	if res.Error != "" { // a limit reached while the answer streamed
		return nil, fmt.Errorf("serve cut its answer short after %d rows: %s", len(res.Rows), res.Error)
	}
	return &res, nil
}

func queryLocal(cmd *cobra.Command, c *commonFlags, l *lakeFlags, sql string) (*serve.Result, error) {
	ctx := cmd.Context()
	s, err := c.spec()
	if err != nil {
		return nil, err
	}
	store, err := l.open(ctx)
	if err == nil {
		err = lake.CheckSpec(ctx, store, s)
	}
	if err != nil {
		return nil, err
	}
	srv, err := serve.Open(ctx, serve.Config{Spec: s, Store: store, CacheDir: filepath.Join(l.cacheDir, "query"), CacheBytes: l.cacheBytes, Log: discardLog()})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	if err := srv.Refresh(ctx); err != nil {
		return nil, err
	}
	return srv.Query(ctx, sql)
}

func printResult(w io.Writer, res *serve.Result, format string) error {
	text := func(x any) string {
		switch x := x.(type) {
		case nil:
			return "NULL"
		case time.Time:
			return x.UTC().Format(time.RFC3339Nano)
		}
		return fmt.Sprint(x)
	}
	switch format {
	case "json":
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(res)
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write(res.Columns)
		for _, row := range res.Rows {
			rec := make([]string, len(row))
			for i, x := range row {
				rec[i] = text(x)
			}
			_ = cw.Write(rec)
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(res.Columns, "\t"))
	for _, row := range res.Rows {
		cells := make([]string, len(row))
		for i, x := range row {
			cells[i] = text(x)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	fmt.Fprintf(tw, "(%d rows)\n", len(res.Rows))
	return errors.Join(tw.Flush())
}
