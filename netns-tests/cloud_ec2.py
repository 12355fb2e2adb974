#!/usr/bin/env python3
"""EC2 set-up and inspection for the `cloud` netns test, against moto_server.

  cloud_ec2.py ENDPOINT setup VIP      -> JSON {eni1, eni2, alloc, public_ip}
  cloud_ec2.py ENDPOINT state ALLOC ENI...  -> JSON {eip_eni, ips: {eni: [...]}}
  cloud_ec2.py ENDPOINT steal ALLOC ENI     -> associates the EIP with ENI

boto3 comes with moto; credentials are moto's fixed test ones.
"""
import json
import sys

import boto3


def client(endpoint):
    return boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def main():
    endpoint, cmd, *args = sys.argv[1:]
    ec2 = client(endpoint)
    if cmd == "setup":
        vpc = ec2.create_vpc(CidrBlock="198.18.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="198.18.0.0/24")["Subnet"]["SubnetId"]
        eni1 = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="198.18.0.2")
        eni2 = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="198.18.0.3")
        eip = ec2.allocate_address(Domain="vpc")
        print(json.dumps({
            "eni1": eni1["NetworkInterface"]["NetworkInterfaceId"],
            "eni2": eni2["NetworkInterface"]["NetworkInterfaceId"],
            "alloc": eip["AllocationId"],
            "public_ip": eip["PublicIp"],
        }))
    elif cmd == "state":
        alloc, *enis = args
        a = ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0]
        ips = {}
        for n in ec2.describe_network_interfaces(NetworkInterfaceIds=enis)["NetworkInterfaces"]:
            ips[n["NetworkInterfaceId"]] = [p["PrivateIpAddress"] for p in n.get("PrivateIpAddresses", [])]
        print(json.dumps({"eip_eni": a.get("NetworkInterfaceId"), "ips": ips}))
    elif cmd == "steal":
        alloc, eni = args
        ec2.associate_address(AllocationId=alloc, NetworkInterfaceId=eni, AllowReassociation=True)
        print(json.dumps({"ok": True}))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
