// The seed's "WRONG" app: no signal handling, so Go's default applies and the process exits
// the moment SIGTERM arrives, cutting whatever it was serving. ebb must make it safe to deploy.
//
// It is http.ListenAndServe split in two (net.Listen, then http.Serve) only so that it can bind
// port 0 and print the port it got; the behaviour on SIGTERM is the same.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"

	"ebb.test/zero-downtime/routes"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()

	mux := routes.Mux()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	log.Fatal(http.Serve(ln, mux))
}
