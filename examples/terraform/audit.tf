# Audit at team scale: CloudTrail -> CloudWatch Logs -> metric filters -> alarms -> SNS.
#
# Every EC2 Instance Connect call (SendSSHPublicKey, OpenTunnel) is a CloudTrail management event.
# This delivers them to a CloudWatch Logs group, where `eic-proxy audit --log-group NAME` reads them
# and two metric filters raise alarms: denied calls, and keys pushed for OS users outside the list.
#
# With a trail that already delivers to CloudWatch Logs: set var.existing_log_group to its group;
# then only the metric filters, the alarms and the topic are created here.
# tests/unit/test_audit_terraform.py parses this file and runs both filter patterns against
# CloudTrail-shaped records.

variable "existing_log_group" {
  description = "log group an existing trail already delivers to (empty: create trail, bucket and group)"
  type        = string
  default     = ""
}

variable "alarm_email" {
  description = "who hears about denied EC2 Instance Connect calls and unexpected OS users"
  type        = string
}

locals {
  create     = var.existing_log_group == "" ? 1 : 0
  log_group  = var.existing_log_group != "" ? var.existing_log_group : aws_cloudwatch_log_group.trail[0].name
  # Edit the OS users you expect in unexpected_os_user_pattern (one != clause each).
  denied_pattern             = "{ ($.eventSource = \"ec2-instance-connect.amazonaws.com\") && ($.errorCode = \"*\") }"
  unexpected_os_user_pattern = "{ ($.eventSource = \"ec2-instance-connect.amazonaws.com\") && ($.eventName = \"SendSSHPublicKey\") && ($.requestParameters.instanceOSUser != \"ec2-user\") && ($.requestParameters.instanceOSUser != \"ubuntu\") }"
}

data "aws_caller_identity" "current" {}

resource "aws_cloudwatch_log_group" "trail" {
  count             = local.create
  name              = "/aws/cloudtrail/eic-audit"
  retention_in_days = 365
}

resource "aws_s3_bucket" "trail" {
  count         = local.create
  bucket_prefix = "eic-audit-trail-"
}

resource "aws_s3_bucket_policy" "trail" {
  count  = local.create
  bucket = aws_s3_bucket.trail[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Sid = "AclCheck", Effect = "Allow", Principal = { Service = "cloudtrail.amazonaws.com" },
        Action = "s3:GetBucketAcl", Resource = aws_s3_bucket.trail[0].arn },
      { Sid = "Write", Effect = "Allow", Principal = { Service = "cloudtrail.amazonaws.com" },
        Action   = "s3:PutObject",
        Resource = "${aws_s3_bucket.trail[0].arn}/AWSLogs/${data.aws_caller_identity.current.account_id}/*",
        Condition = { StringEquals = { "s3:x-amz-acl" = "bucket-owner-full-control" } } },
    ]
  })
}

# The role CloudTrail uses to write into the log group.
resource "aws_iam_role" "trail_to_logs" {
  count = local.create
  name  = "eic-audit-trail-to-logs"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "cloudtrail.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy" "trail_to_logs" {
  count = local.create
  role  = aws_iam_role.trail_to_logs[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = ["logs:CreateLogStream", "logs:PutLogEvents"],
                   Resource = "${aws_cloudwatch_log_group.trail[0].arn}:*" }]
  })
}

resource "aws_cloudtrail" "eic" {
  count                         = local.create
  name                          = "eic-audit"
  s3_bucket_name                = aws_s3_bucket.trail[0].id
  cloud_watch_logs_group_arn    = "${aws_cloudwatch_log_group.trail[0].arn}:*"
  cloud_watch_logs_role_arn     = aws_iam_role.trail_to_logs[0].arn
  is_multi_region_trail         = true
  include_global_service_events = true

  event_selector {
    read_write_type           = "All"
    include_management_events = true # EC2 Instance Connect calls are management events
  }

  depends_on = [aws_s3_bucket_policy.trail, aws_iam_role_policy.trail_to_logs]
}

resource "aws_cloudwatch_log_metric_filter" "denied" {
  name           = "eic-denied"
  log_group_name = local.log_group
  pattern        = local.denied_pattern

  metric_transformation {
    name      = "DeniedCalls"
    namespace = "EicProxy"
    value     = "1"
  }
}

resource "aws_cloudwatch_log_metric_filter" "unexpected_os_user" {
  name           = "eic-unexpected-os-user"
  log_group_name = local.log_group
  pattern        = local.unexpected_os_user_pattern

  metric_transformation {
    name      = "UnexpectedOsUser"
    namespace = "EicProxy"
    value     = "1"
  }
}

resource "aws_sns_topic" "alerts" {
  name = "eic-audit-alerts"
}

resource "aws_sns_topic_subscription" "email" {
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

resource "aws_cloudwatch_metric_alarm" "denied" {
  alarm_name          = "eic-denied-calls"
  alarm_description   = "EC2 Instance Connect denied a SendSSHPublicKey or OpenTunnel call"
  namespace           = "EicProxy"
  metric_name         = "DeniedCalls"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}

resource "aws_cloudwatch_metric_alarm" "unexpected_os_user" {
  alarm_name          = "eic-unexpected-os-user"
  alarm_description   = "a key was pushed for an OS user outside the expected list"
  namespace           = "EicProxy"
  metric_name         = "UnexpectedOsUser"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}

output "log_group" {
  value = local.log_group # eic-proxy audit --log-group <this>
}
