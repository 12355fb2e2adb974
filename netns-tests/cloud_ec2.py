#!/usr/bin/env python3
"""EC2 set-up and inspection for the `cloud` netns test, against moto_server.

  cloud_ec2.py ENDPOINT setup VIP      -> JSON {eni1, eni2, alloc, public_ip}
  cloud_ec2.py ENDPOINT state ALLOC ENI...  -> JSON {eip_eni, ips: {eni: [...]}}
  cloud_ec2.py ENDPOINT steal ALLOC ENI     -> associates the EIP with ENI
  cloud_ec2.py ENDPOINT setup-auth VIP -> setup, plus a role "podlb" that may
      call EC2 and an admin user: adds {role_arn, key, secret}; exactly
      SETUP_AUTH_CALLS requests (moto_server's INITIAL_NO_AUTH_ACTION_COUNT
      lets that many through unchecked)
  cloud_ec2.py ENDPOINT assume ROLE_ARN N   -> N STS AssumeRole credentials
      [{id, secret, token}] (moto accepts them when it checks credentials)

boto3 comes with moto; credentials are moto's fixed test ones, or the
admin user's from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""
import json
import os
import sys

import boto3

SETUP_AUTH_CALLS = 10


def client(endpoint, service="ec2"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    )


def setup(ec2):
    vpc = ec2.create_vpc(CidrBlock="198.18.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="198.18.0.0/24")["Subnet"]["SubnetId"]
    eni1 = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="198.18.0.2")
    eni2 = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress="198.18.0.3")
    eip = ec2.allocate_address(Domain="vpc")
    return {
        "eni1": eni1["NetworkInterface"]["NetworkInterfaceId"],
        "eni2": eni2["NetworkInterface"]["NetworkInterfaceId"],
        "alloc": eip["AllocationId"],
        "public_ip": eip["PublicIp"],
    }


def allow(action):
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}],
    })


def setup_auth(endpoint, ec2):
    out = setup(ec2)  # 5 requests
    iam = client(endpoint, "iam")
    trust = json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Federated": "oidc"},
                       "Action": "sts:AssumeRoleWithWebIdentity"},
                      # The test's admin user makes the IMDS test's credentials.
                      {"Effect": "Allow", "Principal": {"AWS": "*"},
                       "Action": "sts:AssumeRole"}],
    })
    role = iam.create_role(RoleName="podlb", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.put_role_policy(RoleName="podlb", PolicyName="ec2", PolicyDocument=allow("ec2:*"))
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=allow("*"))
    key = iam.create_access_key(UserName="admin")["AccessKey"]  # 10 requests
    out.update({"role_arn": role, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]})
    return out


def main():
    endpoint, cmd, *args = sys.argv[1:]
    ec2 = client(endpoint)
    if cmd == "setup-auth":
        print(json.dumps(setup_auth(endpoint, ec2)))
    elif cmd == "assume":
        role, n = args
        sts = client(endpoint, "sts")
        creds = []
        for i in range(int(n)):
            c = sts.assume_role(RoleArn=role, RoleSessionName=f"imds-{i}")["Credentials"]
            creds.append({"id": c["AccessKeyId"], "secret": c["SecretAccessKey"],
                          "token": c["SessionToken"]})
        print(json.dumps(creds))
    elif cmd == "setup":
        print(json.dumps(setup(ec2)))
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
