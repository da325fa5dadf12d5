package integration

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

const concurrentContainers = 20

// TestConcurrentContainersGetUniqueAddresses: 20 containers started at once
// on one network all start, all get an IPv4 and an IPv6 address inside the
// network's subnets that no other container has, and all reach one server
// container over both.
func TestConcurrentContainersGetUniqueAddresses(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d netDriver) {
		net := d.newNetwork(t, subnets{})
		server := runContainer(t, net)
		s4, s6 := containerIPs(t, server, net)
		p4, p6 := networkPools(t, net)

		ids := make([]string, concurrentContainers)
		errs := make([]error, concurrentContainers)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids[i], errs[i] = runContainerErr(net)
			}()
		}
		wg.Wait()
		t.Logf("%d concurrent docker run -d took %s", concurrentContainers, time.Since(start).Round(time.Millisecond))
		started := 0
		for i, id := range ids {
			if id != "" {
				removeAtCleanup(t, id)
			}
			if errs[i] != nil {
				t.Errorf("container %d: %v", i, errs[i])
			} else {
				started++
			}
		}
		if started != concurrentContainers {
			t.Fatalf("%d of %d containers started", started, concurrentContainers)
		}

		owner := map[string]string{s4: "server", s6: "server"}
		for _, id := range ids {
			v4, v6 := containerIPs(t, id, net)
			for _, a := range []string{v4, v6} {
				if prev, dup := owner[a]; dup {
					t.Errorf("address %s given to both %s and %s", a, prev, short(id))
				}
				owner[a] = short(id)
			}
			if a, err := netip.ParseAddr(v4); err != nil || !p4.Subnet.Contains(a) {
				t.Errorf("%s: IPv4 %s outside %s", short(id), v4, p4.Subnet)
			}
			if a, err := netip.ParseAddr(v6); err != nil || !p6.Subnet.Contains(a) {
				t.Errorf("%s: IPv6 %s outside %s", short(id), v6, p6.Subnet)
			}
		}

		// Four checkers at a time: the machine may have two cores.
		sem := make(chan struct{}, 4)
		for _, id := range ids {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				for _, addr := range []string{s4, s6} {
					if err := tcpFrom(id, addr, "", 3*time.Second); err != nil {
						t.Errorf("%s -> server %s: %v", short(id), addr, err)
					}
				}
			}()
		}
		wg.Wait()
	})
}
