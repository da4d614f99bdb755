// The routes both Go apps (naive, graceful) serve, so that they differ only in what they do on
// SIGTERM: fast answers, a POST echo, and slow answers.
package routes

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Mux answers /, /echo and /slow?ms=N.
func Mux() *http.ServeMux {
	mux := http.NewServeMux()
	// Fast answers; also what a balancer's health check sees when the app stands alone.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	// POST echo: the body comes back as it was sent.
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	})
	// Slow answers: /slow?ms=N sleeps N ms before answering.
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintf(w, "slept %d\n", ms)
	})
	return mux
}
