terraform {
  # Same floor as infra/modules/ssm-resync (instantiated next to it, often in one root module).
  required_version = ">= 1.3"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}
