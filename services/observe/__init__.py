"""havip observe: VRRP adverts and gratuitous ARPs seen on instances' ports, turned into ownership claims."""
