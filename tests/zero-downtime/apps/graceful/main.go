// The seed's idiomatic app: on SIGTERM it keeps serving for -keep-serving (the seed's 5 s sleep
// that lets the load balancer notice), then http.Server.Shutdown stops accepting, closes idle
// connections and waits for in-flight requests (at most -shutdown-timeout) before exiting.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"ebb.test/zero-downtime/routes"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	keepServing := flag.Duration("keep-serving", 5*time.Second, "how long to keep serving after SIGTERM")
	shutdownTimeout := flag.Duration("shutdown-timeout", 25*time.Second, "how long Shutdown waits for in-flight requests")
	flag.Parse()

	mux := routes.Mux()

	// Registered before the listener exists, so that no SIGTERM can arrive unhandled.
	quit := make(chan os.Signal, 1)
	signal.Notify(quit, syscall.SIGTERM, syscall.SIGINT)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 15 * time.Second, IdleTimeout: 60 * time.Second}
	serverErr := make(chan error, 1)
	go func() {
		if err := server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			serverErr <- err
		}
	}()
	fmt.Printf("listening %s\n", ln.Addr())

	select {
	case sig := <-quit:
		log.Printf("signal %v: serving %v more", sig, *keepServing)
	case err := <-serverErr:
		log.Fatal(err)
	}
	time.Sleep(*keepServing)

	ctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	start := time.Now()
	if err := server.Shutdown(ctx); err != nil {
		log.Printf("shutdown: %v", err)
		os.Exit(1)
	}
	log.Printf("stopped gracefully after %v", time.Since(start).Round(time.Millisecond))
}
